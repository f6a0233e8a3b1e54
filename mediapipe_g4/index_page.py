"""The batch index page: every recording with links to its outputs, every failure with its reason."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import OutputError
from .result_fields import one_line, readable, readable_copy, recording_duration, source_name
from .templating import get_template, speaker_map
from .writers import atomic_write, cannot_write, safe_stem


def index_entry(result: Mapping[str, Any], outputs: Sequence[str | os.PathLike[str]], *,
                name: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One recording that worked, for `write_index`. `name`: its path in the batch folder (so two `meeting.mp4`
    in different sub-folders stay apart); without it, the recording's file name."""
    notes = result.get("notes")
    summary = ""
    if isinstance(notes, Mapping) and (notes.get("status") or "ok") == "ok":
        summary = str(notes.get("summary") or "")
    names = speaker_map(result.get("speakers"))
    return {
        "name": Path(name).as_posix() if name else source_name(result) or "recording",
        "status": "ok",
        "error": None,
        "outputs": [os.fspath(p) for p in outputs],
        "duration": recording_duration(result),
        "speakers": list(names.values()),
        "summary": summary,
        "notes_error": None if summary or not isinstance(notes, Mapping) else one_line(notes.get("error")) or None,
        "warning": one_line((result.get("source") or {}).get("warning")) or None,
    }


def failed_entry(name: str | os.PathLike[str], error: str) -> dict[str, Any]:
    """One recording that failed, with the reason, for `write_index`; `name` as for `index_entry`."""
    return {
        "name": Path(name).as_posix(),
        "status": "failed",
        "error": one_line(error) or "unknown error",
        "outputs": [],
        "duration": None,
        "speakers": [],
        "summary": "",
        "notes_error": None,
        "warning": None,
    }


def pending_entry(name: str | os.PathLike[str], why: str) -> dict[str, Any]:
    """One recording a stopped batch did not get to (or did not finish), for `write_index`."""
    return failed_entry(name, why) | {"status": "pending"}


def write_index(
    entries: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    filename: str = "index.html",
    title: str = "Recordings",
) -> Path:
    """The batch index: every recording with links to its outputs, and every failure with its reason."""
    directory = Path(out_dir)
    items = []
    for entry in entries:
        entry = {**entry, **readable_copy({k: v for k, v in entry.items() if k != "outputs"})}
        links = []
        for output in entry.get("outputs") or ():
            path = Path(os.fspath(output))
            rel = os.path.relpath(path if path.is_absolute() else directory / path, directory)
            href = "/".join(urllib.parse.quote(os.fsencode(part), safe="") for part in Path(rel).parts)  # its bytes
            links.append({"href": href, "label": path.suffix.lstrip(".").upper() or readable(path.name),
                          "file": readable(path.name)})
        links.sort(key=lambda link: ["HTML", "MD", "JSON", "SRT", "VTT", "TXT"].index(link["label"])
                   if link["label"] in {"HTML", "MD", "JSON", "SRT", "VTT", "TXT"} else 99)
        summary = one_line(entry.get("summary"))
        items.append({
            "name": str(entry.get("name") or ""),
            "failed": entry.get("status") == "failed",
            "pending": entry.get("status") == "pending",
            "error": one_line(entry.get("error")),
            "links": links,
            "duration": entry.get("duration"),
            "speakers": [str(s) for s in entry.get("speakers") or ()],
            "summary": summary if len(summary) <= 280 else summary[:279].rsplit(" ", 1)[0] + "\u2026",
            "notes_error": one_line(entry.get("notes_error")),
            "warning": one_line(entry.get("warning")),
        })
    context = {
        "title": title,
        "entries": items,
        "ok_count": sum(not i["failed"] and not i["pending"] for i in items),
        "failed_count": sum(i["failed"] for i in items),
        "pending_count": sum(i["pending"] for i in items),
        "version": __version__,
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(cannot_write(directory, exc)) from exc
    name = safe_stem(Path(filename).stem) + ".html"  # stays inside out_dir
    return atomic_write(directory / name, get_template("index.html.j2").generate(**context))
