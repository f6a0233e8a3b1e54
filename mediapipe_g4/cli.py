"""The `g4media` command. The one error boundary: domain errors become one `Error: ...` line."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import click

from . import __version__
from .errors import G4Error

log = logging.getLogger("mediapipe_g4")


class G4Group(click.Group):
    """Turns domain errors (and surprises) into one `Error:` line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Error: interrupted; finished work is kept in the work folder and reused next time", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, G4Error):
                message = str(exc)
            else:
                message = f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)


@click.group(cls=G4Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="g4media")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Local meeting and media transcription and notes with Gemma 4.

    Nothing leaves this machine: FFmpeg reads the recording, Gemma 4 runs here.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _configure_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


def _configure_logging(level: int) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False, markup=False) if sys.stderr.isatty() \
        else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if sys.stderr.isatty() else "g4media: %(message)s"))
    log.handlers[:] = [h for h in log.handlers if isinstance(h, logging.NullHandler)] + [handler]
    log.setLevel(level)


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


# --------------------------------------------------------------------------- probe


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--no-keyframes", is_flag=True, help="Skip finding keyframes (faster on long videos).")
def probe(file: Path, as_json: bool, no_keyframes: bool) -> None:
    """Show a recording's media facts: duration, streams, codecs, rotation, keyframe times."""
    from . import media
    from .progress import progress_hook

    info = media.probe(file)
    keyframe_times: list[float] | None = None
    if info.has_video and not no_keyframes:
        with tempfile.TemporaryDirectory(prefix="g4media-probe-") as tmp, progress_hook(not as_json) as hook:
            found = media.extract_keyframes(file, tmp, info=info, hook=hook)
            keyframe_times = [k.time for k in found]
    facts = {
        "path": info.path,
        "format": info.format_name,
        "duration": round(info.duration, 3),
        "start_time": info.start_time,
        "size_bytes": info.size_bytes,
        "audio": [a.__dict__ for a in info.audio_streams],
        "video": [v.__dict__ for v in info.video_streams],
        "keyframes": [{"time": t} for t in keyframe_times] if keyframe_times is not None else [],
    }
    if as_json:
        _echo_json(facts)
        return
    click.echo(f"{info.path}")
    click.echo(f"  format    {info.format_name}, {info.duration:.2f} s, start {info.start_time:+.3f} s, "
               f"{info.size_bytes / 1e6:.1f} MB")
    for a in info.audio_streams:
        click.echo(f"  audio #{a.index} {a.codec}, {a.sample_rate} Hz, {a.channels} ch ({a.channel_layout or '?'})")
    for v in info.video_streams:
        kind = "cover art" if v.is_cover_art else f"{v.fps or 0:.2f} fps"
        click.echo(f"  video #{v.index} {v.codec}, {v.width}x{v.height}, {kind}, rotation {v.rotation}")
    if not info.has_audio:
        click.echo("  (no audio track: transcription needs one)")
    if keyframe_times is not None:
        shown = ", ".join(f"{t:.0f}s" for t in keyframe_times[:40])
        more = f" (+{len(keyframe_times) - 40} more)" if len(keyframe_times) > 40 else ""
        click.echo(f"  keyframes {len(keyframe_times)}: {shown}{more}")


# --------------------------------------------------------------------------- doctor


@main.command()
@click.option("--model", default=None, help="Model to look for in the Hugging Face cache (default: the default model).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(model: str | None, as_json: bool) -> None:
    """Check FFmpeg, torch devices, free memory and whether the model is downloaded."""
    from .doctor import run_checks

    report = run_checks(model)
    if as_json:
        _echo_json(report)
        return
    for check in report["checks"]:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check["status"]]
        click.echo(f"[{mark}] {check['name']:<10} {check['detail']}")
    if any(c["status"] == "fail" for c in report["checks"]):
        sys.exit(1)


def run() -> None:
    """Console entry point: `--debug` and `-v` are accepted anywhere on the line."""
    args = sys.argv[1:]
    front = [a for a in args if a in ("--debug", "-v", "--verbose")]
    rest = [a for a in args if a not in front]
    main.main(args=front + rest, prog_name="g4media")


if __name__ == "__main__":  # pragma: no cover
    run()
