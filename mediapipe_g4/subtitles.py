"""Subtitle cues from a result: readable lines (speaker prefix, at most two lines of 42 columns, where a Chinese
or Japanese character takes two; cut at phrase ends) with valid times (increasing starts, no overlap), for the SRT
and VTT writers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .result_fields import sorted_segments
from .templating import resolve_speaker_name, speaker_map

MAX_LINE = 42  # columns per subtitle line (the usual broadcast guideline); a wide (CJK) character takes two
MAX_LINES = 2  # lines per cue


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    speaker: str  # display name, "" when unknown
    text: str  # the words of this cue, without the speaker prefix


def speaker_prefix(speaker: str) -> str:
    """`Alice: ` before a cue's words (a long name shortened); "" for an unknown speaker."""
    if not speaker:
        return ""
    if len(speaker) > 24:  # a very long name would crowd the words off the line
        speaker = speaker[:23].rstrip() + "\u2026"
    return f"{speaker}: "


def _char_columns(c: str) -> int:
    if unicodedata.combining(c) or unicodedata.category(c) == "Cf":  # a combining mark; a zero-width joiner
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def columns(text: str) -> int:
    """Columns `text` takes on screen: two for a wide (CJK) character, none for a combining mark or a zero-width
    character."""
    return sum(_char_columns(c) for c in text)


# A unit of line breaking: a run of characters without spaces, except that Chinese and Japanese, written without
# spaces, break between any two characters (an opening mark stays with the character after it and a closing mark
# with the one before it, so no line ends with "「" or starts with "。").
_WIDE = r"\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
_OPENING = "「『（【〈《〔〖〘〚“‘"
_CLOSING = "、。，．！？：；」』）】〉》〕〗〙〛ー々〻ゝゞヽヾ…‥,.!?:;)\\]}\"'”’"
_TOKEN = re.compile(rf"(\s*)([{_OPENING}]*[{_WIDE}][{re.escape(_CLOSING)}]*|[^\s{_WIDE}]+)")

Token = tuple[str, str, int]  # (" " or "" before it, the unit, its columns)


def _tokens(text: str, limit: int) -> list[Token]:
    """(" " or "", unit, columns) for each unit of `text`, a unit wider than `limit` columns cut into pieces that
    fit."""
    tokens: list[Token] = []
    for space, unit in _TOKEN.findall(text):
        glue = " " if space else ""
        wide = columns(unit)
        if wide <= limit:
            tokens.append((glue, unit, wide))
            continue
        piece, used = "", 0
        for c in unit:  # one pass: a run without spaces may be thousands of characters (Thai)
            w = _char_columns(c)
            if piece and used + w > limit:
                tokens.append((glue, piece, used))
                glue, piece, used = "", "", 0
            piece, used = piece + c, used + w
        if piece:
            tokens.append((glue, piece, used))
    return tokens


def _joined(tokens: list[Token]) -> str:
    return "".join(glue + unit for glue, unit, _ in tokens).strip()


class _Lines:
    """Greedy line filling, a token at a time: the lines of at most `width` columns, and the last one's columns."""

    def __init__(self, width: int, tokens: Iterable[Token] = ()) -> None:
        self.width, self.used = width, 0
        self.lines: list[str] = []
        for token in tokens:
            self.add(token)

    def _on_last_line(self, token: Token) -> bool:
        glue, _, wide = token
        return bool(self.lines) and self.used + len(glue) + wide <= self.width

    def add(self, token: Token) -> None:
        glue, unit, wide = token
        if self._on_last_line(token):
            self.lines[-1] += glue + unit
            self.used += len(glue) + wide
        else:
            self.lines.append(unit)
            self.used = wide

    def fits_with(self, token: Token, max_lines: int) -> bool:
        return len(self.lines) + (0 if self._on_last_line(token) else 1) <= max_lines


def wrap_cue(prefix: str, words: str, width: int = MAX_LINE) -> list[str]:
    """Lines of at most `width` columns, the first starting with `prefix`."""
    return _Lines(width, _tokens(prefix + words, width)).lines


def _split_words(prefix: str, text: str, width: int, max_lines: int) -> list[str]:
    """Split `text` into pieces that each fit `max_lines` lines of `width` with the prefix.

    Pieces are filled greedily, but a full piece gives its tail back to the next one when a
    sentence (or, failing that, a clause) ends in its second half, so cues read as phrases.
    """
    head = _tokens(prefix, width)

    def first(token: Token) -> Token:  # a piece's first unit, as wrap_cue lays it out: after the prefix's space
        return (" " if head else "", token[1], token[2])

    def lines_of(tokens: list[Token]) -> _Lines:
        return _Lines(width, [*head, *([first(tokens[0]), *tokens[1:]] if tokens else [])])

    pieces: list[str] = []
    current: list[Token] = []
    laid = lines_of(current)
    for token in _tokens(text, width):
        if current and not laid.fits_with(token, max_lines):
            cut = _phrase_end([unit for _, unit, _ in current])
            pieces.append(_joined(current[:cut]))
            current = current[cut:]
            laid = lines_of(current)
            if current and not laid.fits_with(token, max_lines):  # the tail given back does not fit beside it
                pieces.append(_joined(current))
                current, laid = [], lines_of([])
        laid.add(token if current else first(token))
        current.append(token)
    if current:
        pieces.append(_joined(current))
    return pieces


def _phrase_end(words: list[str]) -> int:
    """Where to end a full cue: after the last sentence end, else clause end, in the second half."""
    half = (len(words) + 1) // 2
    for ends in (".?!…。？！", ",;:—，、；："):
        for i in range(len(words) - 1, half - 1, -1):
            if words[i].rstrip("\"')”’」』）").endswith(tuple(ends)):
                return i + 1
    return len(words)


def subtitle_cues(
    result: Mapping[str, Any], *, width: int = MAX_LINE, max_lines: int = MAX_LINES,
    clean: Callable[[str], str] = str,
) -> list[Cue]:
    """Readable cues: each at most `max_lines` lines of `width` columns (speaker prefix included), of the
    segments' text and the speakers' names as `clean` makes them (a format's own neutralising, done before the
    lines are measured).

    A long segment becomes several cues whose times are interpolated by character count.
    Times are then made valid: starts strictly increase, every end is after its start, and a cue
    ends no later than the next one starts (players and validators want no overlap). Where cues
    overlap (two sides of a call talking at once), each moment shows the one that started last: an
    interjection shows in full, and the cue it cut into shows again after it.
    """
    names = speaker_map(result.get("speakers"))
    raw: list[Cue] = []
    for seg in sorted_segments(result):
        speaker = clean(resolve_speaker_name(seg["speaker"], names))
        pieces = _split_words(speaker_prefix(speaker), clean(seg["text"]), width, max_lines)
        total = sum(len(p) for p in pieces) or 1
        span = seg["end"] - seg["start"]
        done = 0
        for piece in pieces:
            start = seg["start"] + span * done / total
            done += len(piece)
            raw.append(Cue(start, seg["start"] + span * done / total, speaker, piece))

    return [Cue(s / 1000, e / 1000, c.speaker, c.text) for s, e, c in _one_at_a_time(raw)]


def _one_at_a_time(cues: list[Cue]) -> list[list[Any]]:
    """[start ms, end ms, cue] in time order, none overlapping: between any two cue boundaries, the running cue
    that started last (of two starting together, the later one given). Whole milliseconds, both formats'
    resolution; a cue without length gets one millisecond."""
    spans = sorted(((round(c.start * 1000), max(round(c.end * 1000), round(c.start * 1000) + 1), i, c)
                    for i, c in enumerate(cues)), key=lambda s: (s[0], s[2]))
    bounds = sorted({t for s in spans for t in s[:2]})
    out: list[list[Any]] = []
    running: list[tuple[int, int, int, Cue]] = []
    following = 0
    for a, b in zip(bounds, bounds[1:]):
        while following < len(spans) and spans[following][0] <= a:
            running.append(spans[following])
            following += 1
        running = [s for s in running if s[1] > a]
        if not running:
            continue
        shown = max(running, key=lambda s: (s[0], s[2]))[3]
        if out and out[-1][2] is shown and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b, shown])
    return out


def subtitle_time(seconds: float, separator: str) -> str:
    """`00:01:02,500` (SRT, separator ",") or `00:01:02.500` (VTT, separator ".")."""
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def vtt_escape(text: str) -> str:
    """Cue text safe in WebVTT, where `<` starts a tag and `&` an entity."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webvtt(cues: Iterable[Cue]) -> Iterator[str]:
    """The WebVTT text of `cues`, in chunks: the `X.vtt` file, and the captions track of the report's player."""
    yield "WEBVTT\n\n"
    for cue in cues:
        lines = wrap_cue(speaker_prefix(cue.speaker), cue.text)
        text = "\n".join(vtt_escape(line) for line in lines)
        if cue.speaker:
            # The voice span names the speaker for players that style voices; the visible
            # "Alice: " prefix is for the many that do not show voice names.
            voice = re.sub(r"[&<>]", "", speaker_prefix(cue.speaker)[:-2])  # the prefix's length; no escapes
            text = f"<v {voice}>{text}</v>"
        yield f"{subtitle_time(cue.start, '.')} --> {subtitle_time(cue.end, '.')}\n{text}\n\n"
