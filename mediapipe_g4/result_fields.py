"""Reading a result dict (the `X.json` schema) defensively: it may come from an older version, a
hand edit or a model, so every field is checked and cleaned where it is read."""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ResultError


def finite_float(value: Any, default: float = 0.0) -> float:
    """`value` as a finite float; `default` for None, text that is not a number, inf or nan."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


# What text files cannot carry: control characters (tab, newline and carriage return are kept), and lone
# surrogates, which is how Python holds the bytes of a file name that are not UTF-8 (a Latin-1 `r\xe9union.mp4`
# from an old zip or a Samba share reads as 'r\udce9union.mp4'; writing it as UTF-8 fails). Also the bidi
# overrides, embeddings and isolates (U+202A-E, U+2066-9): "report\u202efdp.mp4" shows as "reportpdf.mp4", and
# the reversal runs on past the name in a title or a subtitle line; right-to-left text needs none of them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SURROGATES = re.compile(r"[\ud800-\udfff]+")


def readable(text: str) -> str:
    """`text` as a UTF-8 file and a terminal can take it: a run of bytes that were not UTF-8 becomes one U+FFFD,
    control characters (a file name's escape sequence, a NUL typed into an edited X.json) and bidi overrides go."""
    return _CONTROL.sub("", _SURROGATES.sub("\ufffd", text))


def readable_copy(value: Any) -> Any:
    """A copy of a result (dicts, lists, text) with every text, keys included, `readable`."""
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, Mapping):
        return {readable_copy(k): readable_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [readable_copy(v) for v in value]
    return value


def one_line(value: Any) -> str:
    """`value` as text on one line (whitespace runs collapsed); "" for None."""
    return " ".join(str(value).split()) if value is not None else ""


def sorted_segments(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The result's segments with text, ordered by start (whitespace collapsed)."""
    segments = []
    for seg in result.get("segments") or ():
        text = one_line(seg.get("text"))
        if not text:
            continue
        start = max(finite_float(seg.get("start")), 0.0)
        end = max(finite_float(seg.get("end"), start), start)
        segments.append({"start": start, "end": end, "speaker": seg.get("speaker"), "text": text})
    segments.sort(key=lambda s: (s["start"], s["end"]))
    return segments


def recording_duration(result: Mapping[str, Any]) -> float:
    """The stated duration, or the last segment's or keyframe's end when that is later."""
    duration = finite_float((result.get("source") or {}).get("duration"))
    ends = [s["end"] for s in sorted_segments(result)]
    ends += [finite_float(k.get("end"), finite_float(k.get("time"))) for k in result.get("keyframes") or ()]
    return max([duration, *ends]) if ends else duration


def source_name(result: Mapping[str, Any]) -> str:
    """The recording's file name ("" when the result does not say)."""
    source = result.get("source") or {}
    name = source.get("name") or (Path(str(source["path"])).name if source.get("path") else "")
    return str(name)


def plain(value: Any) -> Any:
    """JSON-ready copies of paths, tuples, numpy scalars and dataclasses."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "to_dict"):
        return plain(value.to_dict())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def is_result(data: Any) -> bool:
    """Whether `data` has the shape of an X.json (a source and a list of segments)."""
    return isinstance(data, dict) and isinstance(data.get("segments"), list) and isinstance(data.get("source"), dict)


MAX_DEPTH = 64  # levels of lists and objects in a result: it has 4 (an edit may add some)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An X.json that `summarize` or `transcribe` wrote, perhaps edited by hand since, checked field by field:
    a field of the wrong type raises a ResultError that names it (`segments[3].start`), so an edit that broke
    the file is found at once, not as a report with a hole in it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # an editor may have saved it with a BOM
    except OSError as exc:
        raise ResultError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path} is not UTF-8 JSON ({exc}).") from exc
    except RecursionError as exc:
        raise ResultError(f"{path} is nested too deeply to be a result.") from exc
    if _depth(data) > MAX_DEPTH:  # the writers walk it with recursion, two frames a level
        raise ResultError(f"{path} is nested too deeply to be a result (over {MAX_DEPTH} levels).")
    if not is_result(data):
        raise ResultError(f"{path} is not a g4media result (it needs a \"source\" and a list of \"segments\"): "
                          f"give the X.json that summarize or transcribe wrote.")
    problem = result_problem(data)
    if problem:
        raise ResultError(f"{path}: {problem}; fix it and run again.")
    return data


MAX_SECONDS = 10_000_000  # about 115 days: a time past this in a result is a typo


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_time(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= MAX_SECONDS


def result_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a result's fields that the reports and `g4media eval` read, or None."""
    duration = data["source"].get("duration")
    if duration is not None and not _is_time(duration):
        return f"source.duration is {json.dumps(duration)}, not a time in seconds"
    for key in ("name", "path", "sha256", "warning"):  # the reports show them (the name from the path if none)
        if data["source"].get(key) is not None and not isinstance(data["source"][key], str):
            return f"source.{key} is not a string"
    for key in ("model", "options", "timings"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is not an object"
    for i, seg in enumerate(data["segments"]):
        where = f"segments[{i}]"
        if not isinstance(seg, dict):
            return f"{where} is not an object"
        for key in ("start", "end"):
            if not _is_time(seg.get(key)):
                return f"{where}.{key} is {json.dumps(seg.get(key))}, not a time in seconds"
        if seg["end"] < seg["start"]:
            return f"{where} ends ({seg['end']}) before it starts ({seg['start']})"
        if not isinstance(seg.get("text"), str):
            return f"{where}.text is not a string"
        if seg.get("speaker") is not None and not isinstance(seg["speaker"], str):
            return f"{where}.speaker is not a string (a speaker id such as \"S1\")"
    for key, needs in (("speakers", "id"), ("keyframes", "time")):
        items = data.get(key, [])
        if not isinstance(items, list):
            return f"{key} is not a list"
        for i, item in enumerate(items):
            if not isinstance(item, dict) or item.get(needs) is None:
                return f"{key}[{i}] is not an object with {json.dumps(needs)}"
            if key == "speakers" and item.get("name") is not None and not isinstance(item["name"], str):
                return f"speakers[{i}].name is not a string"
            # The report divides by the talk times and lists the evidence: 1e308 seconds or a number as the
            # evidence stops it with no word of which field.
            if key == "speakers" and item.get("talk_time") is not None and not _is_time(item["talk_time"]):
                return f"speakers[{i}].talk_time is {json.dumps(item['talk_time'])}, not a time in seconds"
            if key == "speakers" and item.get("evidence") is not None and not isinstance(item["evidence"], list):
                return f"speakers[{i}].evidence is not a list"
            if key == "keyframes" and not _is_time(item["time"]):
                return f"keyframes[{i}].time is not a time in seconds"
    notes = data.get("notes", {})
    if notes is not None and not isinstance(notes, dict):
        return "notes is not an object"
    for key in ("status", "error", "summary"):
        if (notes or {}).get(key) is not None and not isinstance(notes[key], str):
            return f"notes.{key} is not a string"
    texts = {"action_items": ("text", "owner", "due"), "chapters": ("text", "title")}  # what the reports show
    for key, at in (("decisions", "time"), ("action_items", "time"), ("chapters", "start"), ("questions", "time")):
        value = (notes or {}).get(key)
        if value is not None and not isinstance(value, list):
            return f"notes.{key} is not a list"
        for i, item in enumerate(value or ()):
            if not isinstance(item, (dict, str)):
                return f"notes.{key}[{i}] is {json.dumps(item)}, not an object or a text"
            for text in texts.get(key, ("text",)):
                if isinstance(item, dict) and item.get(text) is not None and not isinstance(item[text], str):
                    return f"notes.{key}[{i}].{text} is not a string"
            if isinstance(item, dict) and item.get(at) is not None and not _is_time(item[at]):
                return f"notes.{key}[{i}].{at} is {json.dumps(item[at])}, not a time in seconds"
    return None
