"""Reading a result dict (the `X.json` schema) defensively: it may come from an older version, a
hand edit or a model, so every field is checked and cleaned where it is read."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def finite_float(value: Any, default: float = 0.0) -> float:
    """`value` as a finite float; `default` for None, text that is not a number, inf or nan."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


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
