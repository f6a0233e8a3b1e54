"""Many recordings: find them by content, process each, write an index, go on past failures."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import media
from .errors import G4Error, MediaError, ModelError
from .writers import failed_entry, index_entry, output_stem, write_index, write_outputs

log = logging.getLogger("mediapipe_g4")

# Known media extensions: such a file that does not read is a failure to report. Other files are
# recordings only if FFmpeg finds sound or moving pictures in them; if not, they are not media.
MEDIA_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".mpg",
    ".mpeg", ".ogv", ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif",
    ".amr", ".caf", ".weba",
}
OUTPUT_EXTENSIONS = {".json", ".srt", ".vtt", ".txt", ".md", ".html", ".rttm"}
_STILL_FORMATS = ("image2", "_pipe", "gif", "tty", "srt", "webvtt", "ass")


@dataclass
class BatchReport:
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done

    @property
    def failed(self) -> int:
        return sum(e["status"] == "failed" for e in self.entries)


def find_recordings(folder: Path, *, recursive: bool, exclude: Path | None = None) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each recording in `folder`; (path, reason) for a media-named file that is broken."""
    if not folder.is_dir():
        raise MediaError(f"{folder} is not a folder; give a folder of recordings (or use `g4media summarize FILE`)")
    pattern = "**/*" if recursive else "*"
    for path in sorted(folder.glob(pattern)):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if exclude is not None and exclude in path.resolve().parents:
            continue  # our own outputs
        suffix = path.suffix.lower()
        if suffix in OUTPUT_EXTENSIONS:
            continue
        try:
            info = media.probe(path)
        except MediaError as exc:
            if suffix in MEDIA_EXTENSIONS:
                yield path, str(exc)
            continue
        if not info.has_audio and any(tag in info.format_name for tag in _STILL_FORMATS):
            continue  # a picture or a subtitle file, not a recording
        yield path, None


def already_done(json_path: Path, sha256: str) -> bool:
    try:
        return json.loads(json_path.read_text(encoding="utf-8"))["source"]["sha256"] == sha256
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run_batch(
    folder: Path,
    out_dir: Path,
    formats: list[str],
    process: Callable[[Path], dict[str, Any]],
    *,
    recursive: bool = False,
    redo: bool = False,
    on_file: Callable[[Path, str, str], None] | None = None,
) -> BatchReport:
    """Process every recording; an index.html in `out_dir` links each output and lists each failure.

    Outputs mirror the folder structure (a/meeting.mp4 -> OUT/a/meeting.html), so names never collide.
    A model that cannot load stops the batch (every file would fail the same way).
    """
    from .workdir import file_sha256

    report = BatchReport()
    formats = list(dict.fromkeys([*formats, "json"]))  # the JSON tells a later run what is done
    for path, broken in find_recordings(folder, recursive=recursive, exclude=out_dir.resolve()):
        rel = path.relative_to(folder)
        target_dir = out_dir / rel.parent
        stem = output_stem(path.name)
        if broken:
            report.entries.append(failed_entry(rel, broken))
            on_file and on_file(path, "failed", broken)
            continue
        try:
            if not redo and already_done(target_dir / f"{stem}.json", file_sha256(path)):
                outputs = [target_dir / f"{stem}.{ext}" for ext in _extensions(formats)
                           if (target_dir / f"{stem}.{ext}").exists()]
                result = json.loads((target_dir / f"{stem}.json").read_text(encoding="utf-8"))
                report.entries.append(_relative(index_entry(result, outputs), out_dir))
                report.skipped.append(str(rel))
                on_file and on_file(path, "done before", "")
                continue
            result = process(path)
            outputs = write_outputs(result, target_dir, stem, formats, media_dir=result.get("work_dir"))
        except ModelError:
            raise
        except G4Error as exc:
            report.entries.append(failed_entry(rel, str(exc)))
            on_file and on_file(path, "failed", str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one broken recording must not end the batch
            log.debug("failure on %s", path, exc_info=True)
            report.entries.append(failed_entry(rel, f"unexpected {type(exc).__name__}: {exc}"))
            on_file and on_file(path, "failed", f"unexpected {type(exc).__name__}: {exc}")
            continue
        report.entries.append(_relative(index_entry(result, outputs), out_dir))
        on_file and on_file(path, "ok", ", ".join(p.name for p in outputs))
    write_index(report.entries, out_dir)
    return report


def _extensions(formats: list[str]) -> list[str]:
    from .writers import get_writer

    return [get_writer(f).extension for f in formats]


def _relative(entry: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    entry["outputs"] = [os.path.relpath(p, out_dir) for p in entry["outputs"]]
    return entry
