"""Output writers: one result dict (the `X.json` schema) to json, srt, vtt, txt, md and html.

A registry as in openai/whisper's `utils.py`: `get_writer("srt").write(result, path)`, or
`write_outputs(result, out_dir, stem, ["html", "md"])` for several at once. Every file is written
atomically (a temporary file in the same folder, renamed over the target when complete), so a crash
or a failing render leaves the old file, never half of a new one.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import textwrap
import unicodedata
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jinja2
from markupsafe import Markup

from . import __version__
from .atomic import atomic_path
from .errors import OutputError
from .records import clock
from .templating import get_template, resolve_speaker_name, speaker_map, template_dir

logger = logging.getLogger("mediapipe_g4")

# Calm, distinguishable speaker colours (readable as text on white, and as blocks).
PALETTE = ("#3d6fb6", "#c2693a", "#3d8b5a", "#8459b0", "#2a8a8f", "#b94a67", "#8a7d2b", "#5b6b80")
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".ogv", ".avi", ".wmv", ".mpg", ".mpeg", ".ts"}

# The report's only script, present when the recording sits beside it: a time link seeks the
# page's player instead of opening the file, and docks the player if it is scrolled away.
# The page's Content-Security-Policy allows exactly this script (by hash) and nothing else.
PLAYER_SCRIPT = """
(function () {
  var player = document.getElementById("player");
  if (!player) return;
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-t]");
    if (!link) return;
    event.preventDefault();
    player.currentTime = parseFloat(link.getAttribute("data-t")) || 0;
    var box = player.getBoundingClientRect();
    if (box.bottom < 0 || box.top > window.innerHeight) document.body.classList.add("docked");
    var playing = player.play();
    if (playing && playing.catch) playing.catch(function () {});
  });
  document.getElementById("undock").addEventListener("click", function () {
    document.body.classList.remove("docked");
    player.pause();
  });
})();
"""
PLAYER_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(PLAYER_SCRIPT.encode()).digest()).decode()

MAX_LINE = 42  # characters per subtitle line (the usual broadcast guideline)
MAX_LINES = 2  # lines per cue


# -- atomic files ----------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike[str], chunks: Iterable[str]) -> Path:
    """Write text chunks to `path` atomically (UTF-8, `\\n` newlines).

    The chunks are written to a hidden temporary file beside `path`, which replaces `path` only
    once every chunk is written and synced. Whatever goes wrong (a write error, or an exception
    raised while the chunks are produced) removes the temporary file and leaves `path` as it was.
    """
    target = Path(path)
    try:
        with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
    except BaseException as exc:
        if isinstance(exc, jinja2.TemplateNotFound):  # an IOError too, so tested first
            raise OutputError(
                f"Cannot write {target.name}: the report template {exc.name!r} is missing "
                f"from {template_dir()}. Reinstall g4media."
            ) from exc
        if isinstance(exc, jinja2.TemplateError):
            raise OutputError(f"Cannot render {target.name}: {exc}. This is a bug; please report it.") from exc
        if isinstance(exc, OSError):
            raise OutputError(_cannot_write(target, exc)) from exc
        raise
    logger.debug("wrote %s", target)
    return target


def _cannot_write(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"Cannot write {path}: {reason}. Check that the folder exists, is writable and has free space."


# -- names -------------------------------------------------------------------------------------

_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
MAX_STEM_BYTES = 150  # leaves room for the extension and a temporary suffix within 255 bytes


def safe_stem(name: str) -> str:
    """A file stem that stays inside its folder on any system.

    Spaces and unicode are kept; path separators, control characters and characters Windows
    forbids become `_`; leading dots go (no hidden files, never `.` or `..`). Empty gives `recording`.
    """
    stem = unicodedata.normalize("NFC", str(name))
    stem = _UNSAFE_NAME_CHARS.sub("_", stem)
    stem = " ".join(stem.split()).strip(" .")
    encoded = stem.encode("utf-8")
    if len(encoded) > MAX_STEM_BYTES:
        stem = encoded[:MAX_STEM_BYTES].decode("utf-8", "ignore").strip(" .")
    return stem or "recording"


def output_stem(source_name: str) -> str:
    """The output stem for a recording: its file name without folder or extension, made safe."""
    base = re.split(r"[/\\]", str(source_name))[-1]
    stem = Path(base).stem if Path(base).suffix else base
    return safe_stem(stem)


def source_name(result: Mapping[str, Any]) -> str:
    source = result.get("source") or {}
    name = source.get("name") or (Path(str(source["path"])).name if source.get("path") else "")
    return str(name)


# -- reading a result ------------------------------------------------------------------------


def _num(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def sorted_segments(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The result's segments with text, ordered by start (whitespace collapsed)."""
    segments = []
    for seg in result.get("segments") or ():
        text = _text(seg.get("text"))
        if not text:
            continue
        start = max(_num(seg.get("start")), 0.0)
        end = max(_num(seg.get("end"), start), start)
        segments.append({"start": start, "end": end, "speaker": seg.get("speaker"), "text": text})
    segments.sort(key=lambda s: (s["start"], s["end"]))
    return segments


def recording_duration(result: Mapping[str, Any]) -> float:
    duration = _num((result.get("source") or {}).get("duration"))
    ends = [s["end"] for s in sorted_segments(result)]
    ends += [_num(k.get("end"), _num(k.get("time"))) for k in result.get("keyframes") or ()]
    return max([duration, *ends]) if ends else duration


# -- subtitles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    speaker: str  # display name, "" when unknown
    text: str  # the words of this cue, without the speaker prefix


def _prefix(speaker: str) -> str:
    if not speaker:
        return ""
    if len(speaker) > 24:  # a very long name would crowd the words off the line
        speaker = speaker[:23].rstrip() + "\u2026"
    return f"{speaker}: "


def wrap_cue(prefix: str, words: str, width: int = MAX_LINE) -> list[str]:
    """Lines of at most `width` characters, the first starting with `prefix`."""
    wrapper = textwrap.TextWrapper(width=width, break_long_words=True, break_on_hyphens=False)
    return wrapper.wrap(prefix + words) if (prefix + words).strip() else []


def _split_words(prefix: str, text: str, width: int, max_lines: int) -> list[str]:
    """Split `text` into pieces that each fit `max_lines` lines of `width` with the prefix.

    Pieces are filled greedily, but a full piece gives its tail back to the next one when a
    sentence (or, failing that, a clause) ends in its second half, so cues read as phrases.
    """
    words: list[str] = []
    for word in text.split():
        # A word longer than a line is cut so that it can fit on a line of its own.
        words += [word[i : i + width] for i in range(0, len(word), width)] if len(word) > width else [word]
    pieces: list[str] = []
    current: list[str] = []
    for word in words:
        if current and len(wrap_cue(prefix, " ".join([*current, word]), width)) > max_lines:
            cut = _phrase_end(current)
            pieces.append(" ".join(current[:cut]))
            current = current[cut:]
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _phrase_end(words: list[str]) -> int:
    """Where to end a full cue: after the last sentence end, else clause end, in the second half."""
    half = (len(words) + 1) // 2
    for ends in (".?!…", ",;:—"):
        for i in range(len(words) - 1, half - 1, -1):
            if words[i].rstrip("\"')”’").endswith(tuple(ends)):
                return i + 1
    return len(words)


def subtitle_cues(
    result: Mapping[str, Any], *, width: int = MAX_LINE, max_lines: int = MAX_LINES
) -> list[Cue]:
    """Readable cues: each at most `max_lines` lines of `width` characters (speaker prefix included).

    A long segment becomes several cues whose times are interpolated by character count.
    Times are then made valid: starts strictly increase, every end is after its start, and a cue
    ends no later than the next one starts (players and validators want no overlap).
    """
    names = speaker_map(result.get("speakers"))
    raw: list[Cue] = []
    for seg in sorted_segments(result):
        speaker = resolve_speaker_name(seg["speaker"], names)
        pieces = _split_words(_prefix(speaker), seg["text"], width, max_lines)
        total = sum(len(p) for p in pieces) or 1
        span = seg["end"] - seg["start"]
        done = 0
        for piece in pieces:
            start = seg["start"] + span * done / total
            done += len(piece)
            raw.append(Cue(start, seg["start"] + span * done / total, speaker, piece))

    # Work in whole milliseconds, the resolution of both formats.
    fixed: list[list[Any]] = []
    for cue in raw:
        start, end = round(cue.start * 1000), round(cue.end * 1000)
        if fixed:
            start = max(start, fixed[-1][0] + 1)
        end = max(end, start + 1)
        if fixed and fixed[-1][1] > start:
            fixed[-1][1] = start
        fixed.append([start, end, cue])
    return [Cue(s / 1000, e / 1000, c.speaker, c.text) for s, e, c in fixed]


def subtitle_time(seconds: float, separator: str) -> str:
    """`00:01:02,500` (SRT, separator ",") or `00:01:02.500` (VTT, separator ".")."""
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


stamp = clock  # `mm:ss` below an hour, `h:mm:ss` beyond (TXT lines)


# -- the writers -----------------------------------------------------------------------------


class Writer(ABC):
    """Writes one result to one file. Subclasses produce the text in chunks (`render`)."""

    name: ClassVar[str]
    extension: ClassVar[str]

    def write(
        self,
        result: Mapping[str, Any],
        path: str | os.PathLike[str],
        *,
        media_dir: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write `result` to `path` atomically.

        `media_dir` is the folder that relative keyframe `image_path`s are relative to (the
        recording's work folder); without it they are taken relative to `path`'s folder.
        """
        target = Path(path)
        media = Path(media_dir) if media_dir is not None else None
        return atomic_write(target, self.render(result, target, media_dir=media))

    @abstractmethod
    def render(self, result: Mapping[str, Any], path: Path, *, media_dir: Path | None) -> Iterator[str]:
        """Yield the file's text in chunks."""


class JSONWriter(Writer):
    name = "json"
    extension = "json"

    def render(self, result, path, *, media_dir):
        data = copy.deepcopy(_plain(result))
        for keyframe in data.get("keyframes") or ():
            if isinstance(keyframe, dict) and keyframe.get("image_path"):
                portable = _portable_image_path(keyframe["image_path"], media_dir, path.parent)
                if portable is None:
                    del keyframe["image_path"]
                else:
                    keyframe["image_path"] = portable
        yield json.dumps(data, ensure_ascii=False, indent=2)
        yield "\n"


class SRTWriter(Writer):
    name = "srt"
    extension = "srt"

    def render(self, result, path, *, media_dir):
        for number, cue in enumerate(subtitle_cues(result), start=1):
            lines = wrap_cue(_prefix(cue.speaker), cue.text.replace("-->", "->"))
            yield f"{number}\n{subtitle_time(cue.start, ',')} --> {subtitle_time(cue.end, ',')}\n"
            yield "\n".join(lines) + "\n\n"


class VTTWriter(Writer):
    name = "vtt"
    extension = "vtt"

    def render(self, result, path, *, media_dir):
        yield "WEBVTT\n\n"
        for cue in subtitle_cues(result):
            lines = wrap_cue(_prefix(cue.speaker), cue.text)
            text = "\n".join(_vtt_escape(line) for line in lines)
            if cue.speaker:
                # The voice span names the speaker for players that style voices; the visible
                # "Alice: " prefix is for the many that do not show voice names.
                voice = _vtt_escape(cue.speaker)
                text = f"<v {voice}>{text}</v>"
            yield f"{subtitle_time(cue.start, '.')} --> {subtitle_time(cue.end, '.')}\n{text}\n\n"


class TXTWriter(Writer):
    name = "txt"
    extension = "txt"

    def render(self, result, path, *, media_dir):
        names = speaker_map(result.get("speakers"))
        for seg in sorted_segments(result):
            speaker = resolve_speaker_name(seg["speaker"], names)
            who = f" {speaker}:" if speaker else ""
            yield f"[{stamp(seg['start'])}]{who} {seg['text']}\n"


class _TemplateWriter(Writer):
    template: ClassVar[str]

    def render(self, result, path, *, media_dir):
        context = report_context(result, out_dir=path.parent, media_dir=media_dir)
        yield from get_template(self.template).generate(**context)


class MarkdownWriter(_TemplateWriter):
    name = "md"
    extension = "md"
    template = "report.md.j2"


class HTMLWriter(_TemplateWriter):
    name = "html"
    extension = "html"
    template = "report.html.j2"


WRITERS: dict[str, type[Writer]] = {
    w.name: w for w in (JSONWriter, SRTWriter, VTTWriter, TXTWriter, MarkdownWriter, HTMLWriter)
}


def get_writer(name: str) -> Writer:
    """The writer for a format name (`json`, `srt`, `vtt`, `txt`, `md`, `html`)."""
    key = str(name).strip().lower().lstrip(".")
    if key == "markdown":
        key = "md"
    try:
        return WRITERS[key]()
    except KeyError:
        raise OutputError(f"Unknown output format {name!r}; choose from {', '.join(WRITERS)}.") from None


def write_outputs(
    result: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    stem: str,
    formats: Iterable[str] | str,
    *,
    media_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write `out_dir/stem.<ext>` for each format; returns the paths in the order asked.

    The stem is made safe (`safe_stem`), so no output lands outside `out_dir`. A format that
    would overwrite the recording itself is refused.
    """
    names = [f for f in re.split(r"[,\s]+", formats) if f] if isinstance(formats, str) else list(formats)
    if "all" in names:
        names = list(WRITERS)
    writers: list[Writer] = []
    for name in names:
        writer = get_writer(name)  # all validated before anything is written
        if writer.name not in {w.name for w in writers}:
            writers.append(writer)
    directory = Path(out_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(_cannot_write(directory, exc)) from exc
    stem = safe_stem(stem)
    source_path = (result.get("source") or {}).get("path")
    paths = []
    for writer in writers:
        path = directory / f"{stem}.{writer.extension}"
        if path.resolve().parent != directory.resolve():  # safe_stem makes this impossible
            raise OutputError(f"Refusing to write {path}: it is outside {directory}.")
        if source_path and _same_file(path, Path(str(source_path))):
            raise OutputError(
                f"Refusing to write {path}: it is the recording itself. Choose another folder with -o."
            )
        paths.append(writer.write(result, path, media_dir=media_dir))
    return paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _plain(value: Any) -> Any:
    """JSON-ready copies of paths, tuples, numpy scalars and dataclasses."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def _portable_image_path(image_path: Any, media_dir: Path | None, out_dir: Path) -> str | None:
    """The keyframe path relative to the work folder (or the output folder); None if absolute elsewhere."""
    path = Path(str(image_path))
    if not path.is_absolute():
        return path.as_posix()
    for base in (media_dir, out_dir):
        if base is None:
            continue
        with contextlib.suppress(ValueError, OSError):
            return path.resolve().relative_to(Path(base).resolve()).as_posix()
    return None


# -- the report's view of a result -----------------------------------------------------------


def _media_link(result: Mapping[str, Any], out_dir: Path) -> dict[str, str] | None:
    """A link to the recording when it sits beside the report, else None (plain times)."""
    name = source_name(result)
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        return None
    if not (out_dir / name).is_file():
        return None
    suffix = Path(name).suffix.lower()
    kind = "video" if suffix in VIDEO_SUFFIXES else "audio"
    return {"href": urllib.parse.quote(name, safe=""), "kind": kind, "name": name}


def _report_date(result: Mapping[str, Any]) -> str | None:
    source = result.get("source") or {}
    value = source.get("created") or result.get("created")
    when: _dt.datetime | None = None
    if value:
        with contextlib.suppress(ValueError, TypeError):
            when = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if when is None:
            return str(value)
    elif source.get("path"):
        with contextlib.suppress(OSError):
            when = _dt.datetime.fromtimestamp(Path(str(source["path"])).stat().st_mtime)
    if when is None:
        return None
    return f"{when.day} {when:%B %Y}"


def _nice_step(duration: float, max_ticks: int = 8) -> float:
    for step in (5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400):
        if duration / step <= max_ticks:
            return step
    return max(duration / max_ticks, 1.0)


def _pct(value: float, total: float) -> float:
    return round(min(max(value / total * 100 if total > 0 else 0.0, 0.0), 100.0), 3)


def _flat_options(options: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested option groups as dotted keys (plan.max_clip), so each value stays short."""
    flat: list[tuple[str, Any]] = []
    for key, value in options.items():
        if isinstance(value, Mapping) and value:
            flat.extend(_flat_options(value, f"{prefix}{key}."))
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


def _compact(value: Any) -> str:
    """An option's value for people: yes/no for flags, auto for unset."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(_plain(value), ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def _notes_view(result: Mapping[str, Any], speakers: list[dict[str, Any]]) -> dict[str, Any]:
    notes = result.get("notes")
    by_key: dict[str, dict[str, Any]] = {}
    for sp in speakers:
        by_key[sp["id"].casefold()] = sp
        by_key.setdefault(sp["name"].casefold(), sp)
    if not isinstance(notes, Mapping):
        reason = "this recording was only transcribed (notes were not requested)"
        return {"produced": False, "status": "skipped", "reason": reason}
    status = str(notes.get("status") or "ok")
    error = _text(notes.get("error"))
    if status != "ok":
        reason = error or ("notes were skipped" if status == "skipped" else "the notes step failed without a message")
        return {"produced": False, "status": status, "reason": reason}

    def timed(items: Any) -> list[dict[str, Any]]:
        out = []
        for item in items or ():
            if isinstance(item, str):
                item = {"text": item}
            if isinstance(item, Mapping) and _text(item.get("text")):
                time = item.get("time")
                out.append({"text": _text(item["text"]), "time": _num(time) if time is not None else None})
        return out

    actions = []
    for item in notes.get("action_items") or ():
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, Mapping) or not _text(item.get("text")):
            continue
        owner = _text(item.get("owner"))
        speaker = by_key.get(owner.casefold()) if owner else None
        time = item.get("time")
        actions.append({
            "text": _text(item["text"]),
            "owner": speaker["name"] if speaker else owner,
            "color": speaker["color"] if speaker else None,
            "due": _text(item.get("due")),
            "time": _num(time) if time is not None else None,
        })
    chapters = [
        {"start": max(_num(c.get("start")), 0.0), "title": _text(c.get("title"))}
        for c in notes.get("chapters") or ()
        if isinstance(c, Mapping) and _text(c.get("title"))
    ]
    chapters.sort(key=lambda c: c["start"])
    return {
        "produced": True,
        "status": "ok",
        "reason": "",
        "summary": str(notes.get("summary") or "").strip(),
        "decisions": timed(notes.get("decisions")),
        "action_items": actions,
        "chapters": chapters,
        "questions": timed(notes.get("questions")),
    }


def report_context(
    result: Mapping[str, Any], *, out_dir: Path, media_dir: Path | None = None
) -> dict[str, Any]:
    """Everything the report templates show, computed once: names, colours, shares, positions."""
    source = dict(result.get("source") or {})
    name = source_name(result)
    segments = sorted_segments(result)
    total = recording_duration(result) or 1.0

    # Speakers: the listed ones first, then any id that only the segments mention.
    speakers: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    talk: dict[str, float] = {}
    for seg in segments:
        if seg["speaker"] is not None:
            talk[str(seg["speaker"])] = talk.get(str(seg["speaker"]), 0.0) + seg["end"] - seg["start"]
    listed = [s for s in result.get("speakers") or () if isinstance(s, Mapping) and s.get("id") is not None]
    extra = [{"id": sid} for sid in talk if sid not in {str(s["id"]) for s in listed}]
    for index, sp in enumerate([*listed, *extra]):
        sid = str(sp["id"])
        if sid in seen:
            continue
        tt = sp.get("talk_time")
        view = {
            "id": sid,
            "name": _text(sp.get("name")) or sid,
            "talk_time": _num(tt) if tt is not None else talk.get(sid, 0.0),
            "color": PALETTE[index % len(PALETTE)],
            "index": index,
            "evidence": [
                {"quote": _text(e.get("quote")), "time": _num(e.get("time"))}
                for e in sp.get("evidence") or ()
                if isinstance(e, Mapping) and _text(e.get("quote"))
            ],
        }
        seen[sid] = view
        speakers.append(view)
    talk_total = sum(s["talk_time"] for s in speakers) or 1.0
    for sp in speakers:
        sp["share"] = round(100 * sp["talk_time"] / talk_total)
    unknown = {"id": "", "name": "", "color": "#8a8f98", "index": -1}

    # Timeline: each speaker's turns as blocks (segments closer than half a second merged).
    rows = []
    for sp in speakers:
        blocks: list[list[float]] = []
        for seg in segments:
            if str(seg["speaker"]) != sp["id"]:
                continue
            if blocks and seg["start"] - blocks[-1][1] <= 0.5:
                blocks[-1][1] = max(blocks[-1][1], seg["end"])
            else:
                blocks.append([seg["start"], seg["end"]])
        rows.append({
            "speaker": sp,
            "blocks": [
                {"start": s, "end": e, "left": _pct(s, total), "width": _pct(e - s, total)} for s, e in blocks
            ],
        })
    step = _nice_step(total)
    ticks = [{"time": t * step, "left": _pct(t * step, total)} for t in range(int(total // step) + 1)]

    # Keyframes, resolved to files for embedding.
    keyframes = []
    for number, kf in enumerate(sorted(result.get("keyframes") or (), key=lambda k: _num(k.get("time"))), 1):
        time = _num(kf.get("time"))
        end = max(_num(kf.get("end"), total), time)
        image = kf.get("image_path")
        file = ""
        if image:
            path = Path(str(image))
            if not path.is_absolute():
                path = (media_dir or out_dir) / path
            file = str(path)
        keyframes.append({
            "number": number, "time": time, "end": end, "file": file,
            "width": int(_num(kf.get("width"))), "height": int(_num(kf.get("height"))),
            "left": _pct(time, total), "span": _pct(end - time, total),
        })

    notes = _notes_view(result, speakers)

    # The transcript, with chapter headings and slide markers at their times.
    events: list[tuple[float, int, dict[str, Any]]] = []
    for chapter in notes.get("chapters") or ():
        # A chapter the model dated a moment into a segment starts with that segment.
        at = chapter["start"]
        for seg in segments:
            if seg["start"] <= at < seg["end"] and at - seg["start"] <= 3.0:
                at = seg["start"]
                break
        events.append((at, 0, {"kind": "chapter", **chapter}))
    for kf in keyframes:
        events.append((kf["time"], 1, {"kind": "slide", **kf}))
    for order, seg in enumerate(segments):
        sp = seen.get(str(seg["speaker"]), unknown) if seg["speaker"] is not None else unknown
        events.append((seg["start"], 2, {"kind": "segment", "order": order, **seg, "who": sp}))
    events.sort(key=lambda e: (e[0], e[1], e[2].get("order", 0)))
    transcript = []
    previous: str | None = None
    for _, _, item in events:
        if item["kind"] == "segment":
            item["new_turn"] = previous != item["who"]["id"]
            previous = item["who"]["id"]
        else:
            previous = None
        transcript.append(item)

    model = dict(result.get("model") or {})
    timings = [
        {"step": k, "seconds": _num(v)}
        for k, v in (result.get("timings") or {}).items()
        if k != "total" and v is not None
    ]
    total_time = (result.get("timings") or {}).get("total")
    title = re.sub(r"(?<=.)\.[A-Za-z0-9]{1,5}$", "", name)  # the name without its extension

    return {
        "title": title or "Recording",
        "source": {
            "name": name,
            "duration": total,
            "sha256": str(source.get("sha256") or ""),
        },
        "warning": _text(source.get("warning")),  # e.g. the file is cut off (media.audio_shortfall)
        "date": _report_date(result),
        "duration": total,
        "speakers": speakers,
        "timeline": rows,
        "ticks": ticks,
        "keyframes": keyframes,
        "notes": notes,
        "transcript": transcript,
        "segment_count": len(segments),
        "media": _media_link(result, out_dir),
        "model": {
            "id": _text(model.get("id")),
            "transcribe_model": _text(model.get("transcribe_model")),
            "device": _text(model.get("device")),
            "dtype": _text(model.get("dtype")),
        },
        "options": [{"key": k, "value": _compact(v)} for k, v in _flat_options(result.get("options") or {})],
        "timings": timings,
        "total_time": _num(total_time) if total_time is not None else None,
        "version": __version__,
        "script": Markup(PLAYER_SCRIPT),  # our constant, not recording text
        "script_hash": PLAYER_SCRIPT_HASH,
    }


# -- batch index -----------------------------------------------------------------------------


def index_entry(result: Mapping[str, Any], outputs: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """One recording that worked, for `write_index`."""
    notes = result.get("notes")
    summary = ""
    if isinstance(notes, Mapping) and (notes.get("status") or "ok") == "ok":
        summary = str(notes.get("summary") or "")
    names = speaker_map(result.get("speakers"))
    return {
        "name": source_name(result) or "recording",
        "status": "ok",
        "error": None,
        "outputs": [os.fspath(p) for p in outputs],
        "duration": recording_duration(result),
        "speakers": list(names.values()),
        "summary": summary,
        "notes_error": None if summary or not isinstance(notes, Mapping) else _text(notes.get("error")) or None,
        "warning": _text((result.get("source") or {}).get("warning")) or None,
    }


def failed_entry(source: str | os.PathLike[str], error: str) -> dict[str, Any]:
    """One recording that failed, with the reason, for `write_index`."""
    return {
        "name": Path(os.fspath(source)).name or os.fspath(source),
        "status": "failed",
        "error": _text(error) or "unknown error",
        "outputs": [],
        "duration": None,
        "speakers": [],
        "summary": "",
        "notes_error": None,
        "warning": None,
    }


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
        links = []
        for output in entry.get("outputs") or ():
            path = Path(os.fspath(output))
            rel = os.path.relpath(path if path.is_absolute() else directory / path, directory)
            href = "/".join(urllib.parse.quote(part, safe="") for part in Path(rel).parts)
            links.append({"href": href, "label": path.suffix.lstrip(".").upper() or path.name, "file": path.name})
        links.sort(key=lambda link: ["HTML", "MD", "JSON", "SRT", "VTT", "TXT"].index(link["label"])
                   if link["label"] in {"HTML", "MD", "JSON", "SRT", "VTT", "TXT"} else 99)
        summary = _text(entry.get("summary"))
        items.append({
            "name": str(entry.get("name") or ""),
            "failed": entry.get("status") == "failed",
            "error": _text(entry.get("error")),
            "links": links,
            "duration": entry.get("duration"),
            "speakers": [str(s) for s in entry.get("speakers") or ()],
            "summary": summary if len(summary) <= 280 else summary[:279].rsplit(" ", 1)[0] + "\u2026",
            "notes_error": _text(entry.get("notes_error")),
            "warning": _text(entry.get("warning")),
        })
    context = {
        "title": title,
        "entries": items,
        "ok_count": sum(not i["failed"] for i in items),
        "failed_count": sum(i["failed"] for i in items),
        "version": __version__,
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(_cannot_write(directory, exc)) from exc
    name = safe_stem(Path(filename).stem) + ".html"  # stays inside out_dir
    return atomic_write(directory / name, get_template("index.html.j2").generate(**context))
