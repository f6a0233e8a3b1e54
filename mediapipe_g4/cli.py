"""The `g4media` command. The one error boundary: domain errors become one `Error: ...` line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .errors import G4Error

if TYPE_CHECKING:
    from .diarize import DiarizationOptions
    from .pipeline import RunOptions
    from .planner import PlanOptions

log = logging.getLogger("mediapipe_g4")


class Stopped(KeyboardInterrupt):
    """SIGTERM (a shutdown, `timeout`, `kill`) or SIGHUP (the terminal closed), raised in the main thread as Ctrl-C
    raises KeyboardInterrupt, so that the same cleanup runs: temporary files removed, FFmpeg stopped, the terminal's
    cursor shown again."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> None:
    stopping: list[int] = []

    def stop(signum, frame):
        # Once: `timeout` (and a shutdown) signals the process and then its whole group, so it comes twice at once,
        # and the second must not cut the cleanup short. SIGKILL still ends a process that will not stop.
        if not stopping:
            stopping.append(signum)
            raise Stopped(signum)

    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), stop)


def printable(text: str) -> str:
    """`text` with control characters shown as escapes: a file name with a newline in it keeps an error (or a
    `wrote` line) on one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _usage_line(exc: click.UsageError) -> click.UsageError:
    """A bad option or argument as one `Error:` line and exit status 1, like every other bad input (click's own:
    a usage block, a hint and status 2), with where to look."""
    message = " ".join(exc.format_message().split())
    if exc.ctx is not None:
        see = f"`{exc.ctx.command_path} --help`"
        message = f"{message} See {see}" if message.endswith("?") else f"{message.rstrip('.')}; see {see}"
    one = click.UsageError(message)
    one.exit_code = 1
    return one


_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2 on; 8.1 prints the help itself


class G4Group(click.Group):
    """Turns domain errors (and surprises) into one `Error:` line and exit status 1."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _NO_ARGS as exc:  # a bare `g4media`: its help, as `--help` shows it (it was squeezed into an error)
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            raise click.exceptions.Exit(0) from None
        except click.UsageError as exc:  # `g4media --bogus`
            raise _usage_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # `g4media diarize --speakers 0`, `g4media foo`
            raise _usage_line(exc) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
            what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                click.echo(f"Error: {what}; finished work is kept in the work folder and reused next time", err=True)
            sys.exit(128 + signum)  # 130 for Ctrl-C, 143 for SIGTERM: what a shell reports for the signal
        except BrokenPipeError:
            # The reader of our output went away (`g4media diarize x | head`): stop quietly, as Unix tools do. Point
            # stdout at /dev/null so the interpreter's final flush does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, G4Error):
                message = str(exc)
            else:
                message = f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
            click.echo(f"Error: {printable(message)}", err=True)
            sys.exit(1)


@click.group(cls=G4Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="g4media")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Local meeting and media transcription and notes with Gemma 4.

    Nothing leaves this machine: FFmpeg reads the recording, Gemma 4 runs here (unless you send it to a model
    server of your own with --server).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _configure_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


def _configure_logging(level: int) -> None:
    import os

    from rich.logging import RichHandler

    from .progress import terminal_console

    if level > logging.INFO:  # libraries' own chatter (weight-loading bars, advisories) only with -v
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not sys.stderr.isatty():  # their bars redraw with carriage returns: noise in a log file, even with -v
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    # Logs go to stderr, as the progress does: stdout is the command's output (`diarize --json > turns.json`).
    handler = RichHandler(console=terminal_console(), show_path=False, show_time=False, markup=False) \
        if sys.stderr.isatty() else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if sys.stderr.isatty() else "g4media: %(message)s"))
    log.handlers[:] = [h for h in log.handlers if isinstance(h, logging.NullHandler)] + [handler]
    log.setLevel(level)


class _RecordingPath(click.Path):
    """A recording's file name, checked as given (a URL, an empty name) before it becomes a Path."""

    def convert(self, value, param, ctx):
        from .media import check_file_name

        if isinstance(value, str):
            check_file_name(value)
        return Path(super().convert(value, param, ctx))


RECORDING = _RecordingPath()


def _echo_json(obj) -> None:
    """`obj` as strict JSON: NaN or Infinity (which Python's json writes bare, and other parsers refuse) is an error."""
    try:
        text = json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False)
    except ValueError as exc:
        raise G4Error("the JSON output would hold a number that is not finite (NaN or infinity), which is not "
                      "JSON; nothing was printed") from exc
    click.echo(text)


# --------------------------------------------------------------------------- probe


@main.command()
@click.argument("file", type=RECORDING)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--no-keyframes", is_flag=True, help="Skip finding keyframes (faster on long videos).")
def probe(file: Path, as_json: bool, no_keyframes: bool) -> None:
    """Show a recording's media facts: duration, streams, codecs, rotation, keyframe times."""
    from . import media, video
    from .progress import progress_hook

    info = media.probe(file)
    keyframe_times: list[float] | None = None
    if info.has_video and not no_keyframes:
        # Progress goes to stderr, also with --json (stdout stays JSON): hours of video take a while.
        with tempfile.TemporaryDirectory(prefix="g4media-probe-") as tmp, progress_hook() as hook:
            found = video.extract_keyframes(file, tmp, info=info, hook=hook)
            keyframe_times = [k.time for k in found]
    facts = {
        "path": info.path,
        "format": info.format_name,
        "duration": round(info.duration, 3),
        "start_time": info.start_time,
        "size_bytes": info.size_bytes,
        "indexed_bytes": info.indexed_bytes,
        "cut_off": media.cut_off(info),
        "audio": [a.__dict__ for a in info.audio_streams],
        "video": [v.__dict__ for v in info.video_streams],
        "keyframes": [{"time": t} for t in keyframe_times] if keyframe_times is not None else [],
    }
    if as_json:
        _echo_json(facts)
        return
    click.echo(f"{info.path}")
    about = "~" if info.duration_estimated else ""  # guessed from the bitrate: no index or header gives it
    # a browser's WebM recording states no duration: "0.00 s" read as an empty file
    length = f"{about}{info.duration:.2f} s" if info.duration > 0 else "duration not stated"
    click.echo(f"  format    {info.format_name}, {length}, start {info.start_time:+.3f} s, "
               f"{info.size_bytes / 1e6:.1f} MB")
    for number, a in enumerate(info.audio_streams, 1):
        named = (f', "{a.title}"' if a.title else "") + (f", {a.language}" if a.language else "")
        track = f"track {number} " if len(info.audio_streams) > 1 else ""
        layout = f" ({a.channel_layout})" if a.channel_layout else ""  # a WAV states none
        click.echo(f"  audio {track}#{a.index} {a.codec}, {a.sample_rate} Hz, {a.channels} ch{layout}{named}")
    for v in info.video_streams:
        kind = "cover art" if v.is_cover_art else f"{v.fps or 0:.2f} fps"
        click.echo(f"  video #{v.index} {v.codec}, {v.width}x{v.height}, {kind}, rotation {v.rotation}")
    if not info.has_audio:
        click.echo("  (no audio track: transcription needs one)")
    if facts["cut_off"]:
        click.echo(f"  warning   {facts['cut_off']}")
    if keyframe_times is not None:
        shown = ", ".join(f"{t:.0f}s" for t in keyframe_times[:40])
        more = f" (+{len(keyframe_times) - 40} more)" if len(keyframe_times) > 40 else ""
        click.echo(f"  keyframes {len(keyframe_times)}: {shown}{more}")


# --------------------------------------------------------------------------- doctor


@main.command()
@click.option("--model", default=None, help="Hub id (looked for in the Hugging Face cache) or local folder of the "
              "model to check (default: google/gemma-4-12B-it).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(model: str | None, as_json: bool) -> None:
    """Check FFmpeg, torch devices, free memory and whether the model is downloaded and fits (exit 1 on a FAIL)."""
    from .doctor import run_checks

    report = run_checks(model)
    if as_json:
        _echo_json(report)
    else:
        for check in report["checks"]:
            mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check["status"]]
            click.echo(f"[{mark}] {check['name']:<10} {check['detail']}")
    if any(c["status"] == "fail" for c in report["checks"]):
        sys.exit(1)


# --------------------------------------------------------------------------- shared options


def _compose(*decorators):
    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


model_options = _compose(
    click.option("--model", default=None, help="Hub id or local folder of a Gemma 4 checkpoint "
                 "(default google/gemma-4-12B-it; google/gemma-4-E4B-it and -E2B-it work too)."),
    click.option("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best there is)."),
    click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
                 help="Weights dtype (default: bf16 on GPUs; float32 on CPU, or bf16 when float32 does not fit)."),
    click.option("--quantize", type=click.Choice(["4bit", "8bit"]), default=None,
                 help="Load the weights in 4 or 8 bits with bitsandbytes (CUDA; pip install 'g4media[quant]')."),
)

audio_track_option = click.option(
    "--audio-track", default=None, metavar="N|all",
    help="Which audio track of a file with several (OBS and other recorders keep the mic and the desktop apart): "
         "N (1 = the first, the default) or all (mixed, or the sides of a call when each holds its own voices). "
         "`g4media probe` lists them.")

cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None,
    help="Where each recording's finished work is kept (decoded audio, slides, speaker turns, the model's answers), "
         "so a rerun resumes (default: $G4MEDIA_CACHE or the user cache, e.g. ~/.cache/g4media).")
fresh_option = click.option("--fresh", is_flag=True,
                            help="Ignore finished work in the work folder (turns, keyframes, answers) and redo it.")


def _a_number(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A float option that is a number: `nan` passes click's range checks (every comparison with it is false)."""
    if value != value:
        raise click.BadParameter("not a number")
    return value


speaker_options = _compose(
    click.option("--speakers", type=click.IntRange(min=1), default=None, help="Number of speakers, if known."),
    click.option("--min-speakers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Fewest speakers to consider when finding the count."),
    click.option("--max-speakers", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Most speakers to consider when finding the count."),
    click.option("--split-channels/--no-split-channels", "split_channels", default=None,
                 help="Find the speakers of each channel (each track, with --audio-track all) on its own, as for a "
                      "call recorded with one side per channel (a transcript then hears each from its own side). "
                      "Default: when each channel carries its own voices."),
    audio_track_option,
)

plan_options = _compose(
    click.option("--context-tokens", type=click.IntRange(min=1024), default=None,
                 help="Tokens one notes request may use (prompt + answer; notes only). Default: what this machine's "
                      "memory allows, at most the model's window; with a model server (--server), 32768."),
    click.option("--keyframe-tokens", type=click.Choice(["0", "70", "140", "280"]), default="0", show_default=True,
                 help="Put the keyframe on screen beside each clip to transcribe, at this many soft tokens (0: none)."),
    click.option("--image-tokens", type=click.Choice(["70", "140", "280", "560", "1120"]), default="280",
                 show_default=True, help="Soft tokens of each keyframe in the notes timeline (notes only)."),
    click.option("--max-clip", type=click.FloatRange(1, 30), default=30.0, show_default=True, callback=_a_number,
                 help="Longest clip of one transcription request, in seconds."),
    click.option("--language", default=None, help="Spoken language, e.g. English (default: the model tells)."),
    click.option("--vocabulary", default=None, metavar="TERMS|@FILE",
                 help="Names and terms the recording may hold, comma-separated (or @file, one a line), e.g. "
                      "\"Priya Raman, Kubernetes, OKR\": the model is given their spelling wherever it writes."),
    # What every engine takes: torch's generator and servers' seeds are 64-bit, and to llama.cpp -1 is "random".
    click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
                 help="Seed of the notes' sampling (notes only): a rerun with --fresh writes the same notes on the "
                      "same machine."),
    speaker_options,
)

run_options = _compose(
    model_options,
    plan_options,
    click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                 show_default=True, help="Folder for the outputs."),
    click.option("--transcribe-model", default=None,
                 help="A separate model for transcription (e.g. google/gemma-4-E4B-it); --model then names the "
                      "speakers and writes the notes (transcribe does not load --model at all)."),
    click.option("--assistant", default=None,
                 help="MTP drafter for speculative decoding, e.g. google/gemma-4-12B-it-assistant."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None,
                 help="Requests per model batch (default: from free memory)."),
    click.option("--compile/--no-compile", "compile_decode", default=None,
                 help="Decode with a static cache and torch.compile (default: on CUDA GPUs, off with --quantize). The "
                      "first run compiles each batch shape; later runs reuse the compiled kernels."),
    click.option("--translate-to", default=None, help="Translate the speech into this language (e.g. English)."),
    click.option("--notes-language", default=None,
                 help="Write the notes in this language, e.g. English for a meeting held in German (notes only). "
                      "Default: the transcript's (--translate-to, else --language); with neither, the model picks."),
    cache_dir_option,
    fresh_option,
    click.option("--engine", type=click.Choice(["transformers", "openai"]), default="transformers", show_default=True,
                 help="Run the model in this process (transformers) or send the requests to a model server "
                      "(openai: vLLM, llama.cpp, Ollama; see docs/SERVING.md)."),
    click.option("--server", default=None, metavar="URL",
                 help="Send the requests to this model server (implies --engine openai), e.g. http://localhost:8000/v1."),
    click.option("--server-api", type=click.Choice(["openai", "vllm", "ollama"]), default="openai", show_default=True,
                 help="How media go to the server: OpenAI input_audio parts, vLLM audio_url, or Ollama's /api/chat."),
    click.option("--api-key-env", default=None, metavar="NAME",
                 help="Environment variable that holds the server's API key (the key itself is never logged)."),
    click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Requests in flight at the server at once (vLLM: 32-64; llama.cpp: its --parallel)."),
    click.option("--served-model", default=None, metavar="NAME",
                 help="The model's name on the server, for every request (default: the --model id), e.g. "
                      "gemma4:12b for Ollama."),
    click.option("--server-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
                 callback=_a_number,
                 help="Seconds to wait for one answer from the server; it is asked once more, then the run stops."),
)


def _plan_options(kw: dict) -> PlanOptions:
    from .planner import PlanOptions

    return PlanOptions(max_clip=kw["max_clip"], keyframe_tokens=int(kw["keyframe_tokens"]),
                       notes_image_tokens=int(kw["image_tokens"]), language=_language(kw["language"]),
                       translate_to=_language(kw.get("translate_to")),
                       notes_language=_language(kw.get("notes_language")),
                       context_tokens=kw["context_tokens"], seed=kw["seed"],
                       vocabulary=_vocabulary(kw.get("vocabulary")))


def _language(value: str | None) -> str | None:
    """A language option on one line; None for an empty one (`--language "$LANG_NAME"` with the variable unset),
    which would otherwise be put into the model card's prompt as is: "Transcribe ... in   into   text"."""
    return " ".join(value.split()) or None if value is not None else None


def _vocabulary(value: str | None) -> tuple[str, ...]:
    """--vocabulary: the terms themselves, or @FILE holding them."""
    from .prompts import parse_vocabulary

    if value and value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise G4Error(f"--vocabulary: cannot read {path}: {reason}") from exc
        value = "\n".join(line for line in value.splitlines() if not line.lstrip().startswith("#"))  # comments
        if not parse_vocabulary(value):
            raise G4Error(f"--vocabulary: {path} holds no terms (one a line, or separated by commas; # comments)")
    terms = parse_vocabulary(value)
    if value and value.strip() and not terms:
        raise G4Error(f"--vocabulary {value!r} holds no terms; separate them with commas")
    return terms


def _audio_track(value: str | None) -> int | str | None:
    """--audio-track: None (the first), a track number from 1, or "all"."""
    if value is None:
        return None
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise click.BadParameter(f"takes a track number (1, 2, ...) or all, not {value!r}", param_hint="--audio-track")


def _diarization_options(kw: dict) -> DiarizationOptions:
    from .diarize import DiarizationOptions

    if kw["min_speakers"] > kw["max_speakers"]:
        raise click.BadParameter("--min-speakers is more than --max-speakers")
    ctx = click.get_current_context(silent=True)
    given = {name for name in ("min_speakers", "max_speakers")
             if ctx is not None and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    known = kw["speakers"]
    if known is not None and ("min_speakers" in given and known < kw["min_speakers"]
                              or "max_speakers" in given and known > kw["max_speakers"]):
        raise click.BadParameter(f"--speakers {known} is outside --min-speakers {kw['min_speakers']} to "
                                 f"--max-speakers {kw['max_speakers']}; give the count, or the range")
    sides = {None: "auto", True: "split", False: "mix"}[kw["split_channels"]]
    return DiarizationOptions(num_speakers=kw["speakers"], min_speakers=kw["min_speakers"],
                              max_speakers=kw["max_speakers"], sides=sides)


def _server_plan(plan: PlanOptions, api: str) -> PlanOptions:
    """The plan for a model server: its context (this machine's memory says nothing about it), and its images' size,
    which only vLLM takes per request."""
    from dataclasses import replace

    from .openai_engine import DEFAULT_IMAGE_TOKENS, SERVER_CONTEXT_TOKENS

    if plan.context_tokens is None:
        plan = replace(plan, context_tokens=SERVER_CONTEXT_TOKENS)
    asked = {"--image-tokens": plan.notes_image_tokens, "--keyframe-tokens": plan.keyframe_tokens}
    other = [f"{flag} {n}" for flag, n in asked.items() if n not in (0, DEFAULT_IMAGE_TOKENS)]
    if api != "vllm" and other:
        log.warning("%s: only vLLM (--server-api vllm) takes the size of an image with each request; llama.cpp sets "
                    "it when it starts (--image-max-tokens) and Ollama uses %d, so the requests are planned with %d",
                    ", ".join(other), DEFAULT_IMAGE_TOKENS, DEFAULT_IMAGE_TOKENS)
        plan = replace(plan, notes_image_tokens=DEFAULT_IMAGE_TOKENS,
                       keyframe_tokens=DEFAULT_IMAGE_TOKENS if plan.keyframe_tokens else 0)
    return plan


def _run_options(kw: dict, *, summarize: bool, formats: list[str]) -> RunOptions:
    from .names import parse_name_overrides
    from .pipeline import RunOptions
    from .transformers_engine import DEFAULT_MODEL

    plan = _plan_options(kw)
    if kw.get("device"):
        from .memory import check_device

        kw["device"] = check_device(kw["device"])  # at once, not after the recording is decoded
    engine = kw.get("engine") or "transformers"
    if kw.get("server") and engine == "transformers":
        engine = "openai"  # --server URL says where the model runs
    if engine == "openai":
        plan = _server_plan(plan, kw.get("server_api") or "openai")
    return RunOptions(
        model=kw["model"] or DEFAULT_MODEL, transcribe_model=kw["transcribe_model"], device=kw["device"],
        dtype=kw["dtype"], quantize=kw["quantize"], assistant=kw["assistant"], batch_size=kw["batch_size"],
        compile=kw.get("compile_decode"), plan=plan, diarization=_diarization_options(kw),
        audio_track=_audio_track(kw.get("audio_track")),
        names=tuple(parse_name_overrides(kw.get("names")).items()), summarize=summarize,
        # the notes, the reports and X.json show the slides; subtitles and text do not
        slides=summarize or bool(plan.keyframe_tokens) or bool({"json", "html", "md"} & set(formats)),
        cache_dir=kw["cache_dir"], fresh=kw["fresh"], engine=engine, server=kw.get("server"),
        server_api=kw.get("server_api") or "openai", api_key_env=kw.get("api_key_env"),
        concurrency=kw.get("concurrency") or 8, served_model=kw.get("served_model"),
        server_timeout=kw.get("server_timeout") or 600.0,
    )


# --------------------------------------------------------------------------- plan


@main.command()
@click.argument("file", type=RECORDING)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@model_options
@plan_options
@cache_dir_option
@fresh_option
def plan(file: Path, as_json: bool, **kw) -> None:
    """Show the model requests a recording needs, their token counts (exact with the model's processor files, else
    estimated) and the memory, without the weights."""
    from . import media
    from .memory import check_device
    from .pipeline import RunOptions, prepare_recording
    from .planner import format_plan, make_plan
    from .progress import progress_hook

    options = _plan_options(kw)  # its mistakes are said before the recording is decoded
    device = check_device(kw["device"]) if kw["device"] else None
    # The same audio, slides and turns as summarize (and its cache). Progress goes to stderr, also with --json
    # (stdout stays JSON): a long recording's speaker turns take minutes.
    with progress_hook() as hook:
        ready = prepare_recording(file, RunOptions(diarization=_diarization_options(kw), cache_dir=kw["cache_dir"],
                                                   fresh=kw["fresh"], audio_track=_audio_track(kw["audio_track"])),
                                  hook=hook)
    try:
        result = make_plan(ready.waveform, ready.diarization.turns, ready.keyframes(), model=kw["model"],
                           options=options, device=device, dtype=kw["dtype"], quantize=kw["quantize"],
                           sources=ready.sources())
    finally:
        media.release_audio(ready.work)  # the turns and slides stay cached; the decoded audio is big, quick to redo
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(format_plan(result, name=file.name))


# --------------------------------------------------------------------------- diarize


@main.command()
@click.argument("file", type=RECORDING)
@click.option("--json", "as_json", is_flag=True,
              help="Print {duration, speakers, turns} as JSON (and sides: each speaker's channel, for a call split "
                   "by channel).")
@click.option("--rttm", "rttm_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Also write the turns as an RTTM file here (`-`: print them instead).")
@speaker_options
@cache_dir_option
@fresh_option
def diarize(file: Path, as_json: bool, rttm_path: Path | None, **kw) -> None:
    """Who spoke when: speaker turns (S1, S2, ...) from voice embeddings, without the model."""
    from . import media
    from .diarize import rttm_lines, write_rttm
    from .pipeline import RunOptions, prepare_recording
    from .progress import progress_hook

    to_stdout = rttm_path is not None and str(rttm_path) == "-"
    if to_stdout and as_json:
        raise G4Error("--rttm - and --json both print to stdout; choose one (or give --rttm a file)")
    if to_stdout:
        rttm_path = None
    if rttm_path is not None and rttm_path.exists() and file.exists() and os.path.samefile(rttm_path, file):
        raise G4Error(f"Refusing to write the RTTM to {rttm_path}: it is the recording itself")
    if rttm_path is not None:
        _check_folder(rttm_path.parent, rttm_path)  # before the work, as summarize does for its outputs
    options = RunOptions(diarization=_diarization_options(kw), audio_track=_audio_track(kw["audio_track"]),
                         slides=False, cache_dir=kw["cache_dir"], fresh=kw["fresh"])
    # The same audio and turns as summarize (and its cache). Progress goes to stderr, also with --json (stdout stays
    # JSON): a 2-hour recording's turns take minutes.
    with progress_hook() as hook:
        ready = prepare_recording(file, options, hook=hook)
    media.release_audio(ready.work)  # the turns stay cached; the decoded audio is big and quick to redo
    result = ready.diarization
    if rttm_path is not None:
        write_rttm(result, rttm_path, file_id=file.stem)
    if to_stdout:
        click.echo("".join(line + "\n" for line in rttm_lines(result, file_id=file.stem)), nl=False)
        return
    if as_json:
        _echo_json(result.to_dict())
        return
    click.echo(f"{file.name}: {result.duration:.1f} s, {_count(len(result.speakers), 'speaker')}, "
               f"{_count(len(result.turns), 'turn')}")
    for sid in result.speakers:
        talk = sum(t.duration for t in result.turns if t.speaker == sid)
        click.echo(f"  {sid:<4} {talk:7.1f} s")
    for t in result.turns:
        click.echo(f"  {t.start:8.2f} {t.end:8.2f}  {t.speaker}")
    if rttm_path is not None:
        click.echo(f"RTTM written to {rttm_path}")


# --------------------------------------------------------------------------- transcribe / summarize / batch

TRANSCRIBE_FORMATS = "html,md,json,srt,vtt,txt"  # the page too: the transcript, playable
SUMMARIZE_FORMATS = "html,md,json,srt,vtt"
RENDER_FORMATS = "html,md,srt,vtt"  # the X.json is the input


def _formats(text: str) -> list[str]:
    """--format as the writers' own names, each once ("all": every writer; "HTML", "markdown" as html, md); an
    unknown format is an error before any work starts."""
    from .writers import WRITERS, get_writer

    names = [f for f in text.replace(" ", ",").split(",") if f]
    if not names:
        raise G4Error(f"--format {text!r} names no output; give some of json, srt, vtt, txt, md, html (or all)")
    if "all" in (n.strip().lower() for n in names):
        return list(WRITERS)
    return list(dict.fromkeys(get_writer(name).name for name in names))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _distinct(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """The files, each once (the same file named twice, or by two paths, is done once)."""
    seen: dict[str, Path] = {}
    for file in files:
        try:
            key = os.path.realpath(file)
        except OSError:
            key = str(file)
        seen.setdefault(key, file)
    return tuple(seen.values())


def _check_folder(folder: Path, output: Path) -> None:
    """Refuse `output` if `folder`, where it goes, cannot be made or written in. The folder itself is made when the
    first output is written (a run that fails before leaves nothing); here: its nearest existing folder must be a
    folder we may write in."""
    from .errors import OutputError
    from .writers import cannot_write

    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), None)
    if existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        reason = "Not a directory" if not existing.is_dir() else "Permission denied (or a read-only file system)"
        raise OutputError(cannot_write(output, OSError(0, f"{reason}: {existing}")))


def _check_outputs(files: tuple[Path, ...], stems: dict[Path, str], out_dir: Path, formats: list[str]) -> None:
    """Refuse, before any work, an output folder that cannot be written, an output that would be one of the
    recordings (`talk.txt` transcribed to TXT beside itself) and one whose name a folder holds."""
    from .errors import OutputError
    from .writers import get_writer

    _check_folder(out_dir, out_dir)
    recordings = {os.path.realpath(f) for f in files}
    for file in files:
        for name in formats:
            target = out_dir / f"{stems[file]}.{get_writer(name).extension}"
            if os.path.realpath(target) in recordings:
                raise OutputError(f"Refusing to write {target}: it is one of the files given. Choose another "
                                  "folder with -o.")
            if target.is_dir():  # a rename cannot replace a folder: found now, not after the whole run
                raise OutputError(f"Cannot write {target}: a folder of that name is there. Move it, or choose "
                                  "another folder with -o.")
            if target.is_symlink() and Path(os.path.realpath(target)).parent != Path(os.path.realpath(out_dir)):
                raise OutputError(f"Refusing to write {target}: it is a link to {os.readlink(target)}, outside "
                                  f"{out_dir} (outputs stay in their folder). Remove it, or choose another folder "
                                  "with -o.")


def _refuse_a_result(file: Path) -> None:
    """A g4media X.json given as a recording is an error that says to `render` it."""
    from .result_fields import is_result

    if file.suffix.lower() != ".json" or not file.is_file() or file.stat().st_size > 256 * 1024 * 1024:
        return
    try:
        data = json.loads(file.read_bytes())
    except (OSError, ValueError, RecursionError):
        return
    if is_result(data):
        import shlex

        raise G4Error(f"{file} is what g4media wrote for a recording (an X.json), not a recording; `g4media render "
                      f"{shlex.quote(str(file))}` writes its reports again")


def _process_files(files: tuple[Path, ...], kw: dict, *, summarize: bool) -> None:
    from . import media
    from .errors import G4Error, ModelError
    from .pipeline import Lookahead, make_engine_factory, prepares_ahead, process_recording
    from .progress import progress_hook
    from .writers import output_stems, write_outputs

    formats = _formats(kw["format"])
    options = _run_options(kw, summarize=summarize, formats=formats)
    files = _distinct(files)
    for file in files:  # an X.json given for its recording: said as what it is (it was "one of the recordings")
        _refuse_a_result(file)
    # Before anything about the model: if no file is a recording (a quick ffprobe each, up to the first that is),
    # say what is wrong with the first. The rest are probed when their turn comes.
    first_problem: G4Error | None = None
    for file in files:
        try:
            media.probe(file)
            break
        except G4Error as exc:
            first_problem = first_problem or exc
    else:
        raise first_problem
    stems = output_stems(files)
    _check_outputs(files, stems, kw["output_dir"], formats)  # before any work: a refusal after an hour is no use
    factory = make_engine_factory(options)
    ahead = Lookahead(options, factory) if len(files) > 1 and prepares_ahead(options) else None
    failed = 0
    for k, file in enumerate(files):
        try:
            with progress_hook() as hook:
                if ahead is not None and k + 1 < len(files):
                    ahead.queue(files[k + 1])  # its FFmpeg and speaker turns while the model works on this one
                prepared = ahead.prepare(file, hook) if ahead is not None else None
                result = process_recording(file, options, factory, hook=hook, prepared=prepared)
            paths = write_outputs(result, kw["output_dir"], stems[file], formats,
                                  media_dir=result.get("work_dir"))
        except ModelError:
            raise  # every file would fail the same way
        except G4Error as exc:
            if len(files) == 1:
                raise
            click.echo(printable(f"Error: {exc}"), err=True)
            failed += 1
            continue
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items() if v >= 0.05)
        notes = result["notes"]
        click.echo(printable(f"{file.name}: wrote {', '.join(str(p) for p in paths)}"))
        click.echo(f"  {_count(len(result['segments']), 'segment')}, {_count(len(result['speakers']), 'speaker')}; "
                   f"{timings}")
        if summarize and notes.get("status") != "ok":
            click.echo(f"  notes not produced: {notes.get('error')}")
    if failed:
        click.echo(f"Error: {failed} of {len(files)} recordings failed (see above)", err=True)
        sys.exit(1)


@main.command()
@click.argument("files", nargs=-1, required=True, type=RECORDING)
@run_options
@click.option("--format", default=TRANSCRIBE_FORMATS, show_default=True,
              help="Outputs to write: json, srt, vtt, txt, md, html (comma-separated, or all).")
def transcribe(files: tuple[Path, ...], **kw) -> None:
    """Transcribe recordings: who said what and when, as an HTML page, Markdown, JSON, SRT, VTT and TXT.

    Stopped part-way (Ctrl-C, a crash, a shutdown), the same command again resumes: finished work is kept in the
    work folder (--cache-dir); --fresh redoes it.
    """
    _process_files(files, kw, summarize=False)


@main.command()
@click.argument("files", nargs=-1, required=True, type=RECORDING)
@run_options
@click.option("--names", default=None, help="Speaker names to use, e.g. S1=Alice,S2=Bob (ids as in the transcript); "
                                           "for a call found side by side also left=Alice,right=Bob (or track1=...).")
@click.option("--format", default=SUMMARIZE_FORMATS, show_default=True,
              help="Outputs to write: html, md, json, srt, vtt, txt (comma-separated, or all).")
def summarize(files: tuple[Path, ...], **kw) -> None:
    """Meeting notes: summary, decisions, action items, chapters, slides - as a self-contained HTML page.

    Stopped part-way (Ctrl-C, a crash, a shutdown), the same command again resumes: finished work is kept in the
    work folder (--cache-dir); --fresh redoes it.
    """
    _process_files(files, kw, summarize=True)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@run_options
@click.option("--recursive", "-r", is_flag=True, help="Look in sub-folders too.")
@click.option("--transcribe-only", is_flag=True, help="Transcripts only, no names or notes.")
@click.option("--format", default=None,
              help=f"Outputs per recording (default: {SUMMARIZE_FORMATS}; "
                   f"with --transcribe-only: {TRANSCRIBE_FORMATS}); json is always written (it tells a later "
                   f"run what is done).")
def batch(folder: Path, **kw) -> None:
    """Process every recording in a folder (found by content), skip those done, write index.html.

    Stopped part-way (Ctrl-C, a crash, a shutdown), the same command again resumes: finished work is kept in the
    work folder (--cache-dir); --fresh redoes it.
    """
    from .batch import default_workers, recordings_in, run_batch
    from .pipeline import Lookahead, make_engine_factory, prepares_ahead, process_recording
    from .progress import progress_hook

    summarize = not kw["transcribe_only"]
    kw["format"] = kw["format"] or (SUMMARIZE_FORMATS if summarize else TRANSCRIBE_FORMATS)
    formats = _formats(kw["format"])
    options = _run_options(kw, summarize=summarize, formats=formats)
    out_dir: Path = kw["output_dir"]
    _check_folder(out_dir, out_dir)  # before any work, as summarize does: not one failure per recording
    # Looked for before the model is: a mistyped folder was told to download 24 GB of weights
    found = recordings_in(folder, out_dir, recursive=kw["recursive"])
    if not found:
        raise G4Error(f"no recordings found in {folder} (audio and video files, found by content"
                      f"{'' if kw['recursive'] else '; -r looks in its sub-folders too'})")
    factory = make_engine_factory(options)
    workers = default_workers(options.engine, options.concurrency)
    ahead = Lookahead(options, factory) if workers == 1 and prepares_ahead(options) else None

    def process(path: Path) -> dict:
        if workers > 1:  # no progress bars for several recordings at once: say which are under way
            click.echo(f"{path.relative_to(folder)}: working on it", err=True)
        with progress_hook(workers == 1) as hook:  # one progress display at a time; lines per file otherwise
            prepared = ahead.prepare(path, hook) if ahead is not None else None
            return process_recording(path, options, factory, hook=hook, prepared=prepared)

    def on_file(path: Path, status: str, detail: str) -> None:
        click.echo(printable(f"{path.relative_to(folder)}: {status}{': ' + detail if detail else ''}"),
                   err=status == "failed")

    report = run_batch(folder, out_dir, formats, process, recursive=kw["recursive"], redo=kw["fresh"],
                       on_file=on_file, workers=workers, ahead=ahead.queue if ahead is not None else None,
                       changed=options.changed_from, found=found)
    ok = len(report.entries) - report.failed
    click.echo(f"{ok} done ({len(report.skipped)} from before), {report.failed} failed; "
               f"index: {out_dir / 'index.html'}")
    if report.failed:
        sys.exit(1)


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the outputs (default: beside each X.json).")
@click.option("--format", default=None,
              help=f"Outputs to write: html, md, srt, vtt, txt, json (comma-separated, or all). Default: those "
                   f"beside the X.json already (else {RENDER_FORMATS}).")
def render(results: tuple[Path, ...], output_dir: Path | None, **kw) -> None:
    """Write the reports again from X.json, without the model: after editing a speaker's name or a misheard
    word in it, after copying the recording beside the report (the page then plays it), or after an upgrade."""
    from .result_fields import load_result, source_name
    from .writers import WRITERS, output_stem, output_stems, write_outputs

    results = _distinct(results)
    loaded = [(path, load_result(path)) for path in results]  # every file checked before anything is written
    # Into one -o folder, two X.json of one name (from two folders) must not write over each other.
    stems = output_stems(results) if output_dir else {path: path.stem for path in results}
    for path, result in loaded:
        out_dir, stem = output_dir or path.parent, stems[path]
        if not path.is_file() or _is_stream(path):  # <(...), /dev/stdin: "/dev/fd/63" names neither the outputs
            # nor their folder (and `< X.json` makes /dev/stdin a link to a regular file, whose folder is /dev)
            stem = output_stem(source_name(result) or "result")
            out_dir = output_dir or Path.cwd()
        if kw["format"]:
            formats = _formats(kw["format"])
        else:  # the reports made before, beside the X.json
            formats = [f for f in WRITERS if f != "json" and (path.parent / f"{path.stem}.{f}").exists()]
            formats = formats or _formats(RENDER_FORMATS)
        # Keyframe images are relative to the work folder the result names (or, if it is gone, to the result's).
        work = Path(str(result.get("work_dir") or path.parent))
        media_dir = work if work.is_dir() else path.parent
        names = [f for f in formats if not (f == "json" and (out_dir / f"{stem}.json").resolve() == path.resolve())]
        missing = _drop_missing_images(result, media_dir)
        written = write_outputs(result, out_dir, stem, names, media_dir=media_dir) if names else []
        click.echo(printable(f"{path.name}: wrote {', '.join(str(p) for p in written) or 'nothing (it is the input)'}"))
        if missing:
            click.echo(f"  {missing} of {len(result.get('keyframes') or [])} slide images are gone (the work folder "
                       f"{work} was cleaned?): the reports list those slides without their pictures")


def _is_stream(path: Path) -> bool:
    """A path of the system's own for a stream (/dev/stdin, /dev/fd/N, /proc/self/fd/N), whatever it points at."""
    return os.name == "posix" and re.fullmatch(r"/dev/std(?:in|out|err)|/dev/fd/\d+|/proc/(?:self|\d+)/fd/\d+",
                                               os.path.abspath(path)) is not None


def _drop_missing_images(result: dict, media_dir: Path) -> int:
    """Forget the image of each keyframe whose file is not there (one line about them, not a warning for each
    place a report would show it); how many."""
    count = 0
    for kf in result.get("keyframes") or ():
        image = kf.get("image_path")
        if image and not (media_dir / str(image)).is_file():
            del kf["image_path"]
            count += 1
    return count


# --------------------------------------------------------------------------- eval


@main.command("eval")
@click.argument("results", type=click.Path(path_type=Path))
@click.argument("references", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print every metric as JSON.")
@click.option("--collar", type=click.FloatRange(min=0, max=60), default=0.25, show_default=True, callback=_a_number,
              help="Seconds not scored on EACH side of every reference speaker boundary (as md-eval -c).")
def eval_(results: Path, references: Path, as_json: bool, collar: float) -> None:
    """Score results (X.json, or a batch output folder) against references (RTTM, STM, segments JSON, notes JSON).

    WER, cpWER, DER, JER, speaker counts, naming accuracy, notes recall and speed, per recording and overall.
    References pair with results by name: X.json <-> X.rttm, X.stm, X.truth.json (or X.json: segments),
    X.notes.json. A result may also be who-spoke-when alone (an RTTM, or `diarize --json` output, or a folder of
    them): DER, JER and the speaker count only.
    """
    from .evaluate import evaluate, format_table

    report = evaluate(results, references, collar=collar)
    if as_json:
        _echo_json(report)
    else:
        click.echo(format_table(report))


def run() -> None:
    """Console entry point: `--debug` and `-v` are accepted anywhere on the line."""
    args = sys.argv[1:]
    front = [a for a in args if a in ("--debug", "-v", "--verbose")]
    rest = [a for a in args if a not in front]
    _stop_on_signals()  # here, not in `main`: a program that calls `main` keeps its own signal handling
    main.main(args=front + rest, prog_name="g4media")


if __name__ == "__main__":  # pragma: no cover
    run()
