"""Meeting notes as the model must give them: parsed from its answer, validated, grounded.

The model answers in JSON. We parse leniently (code fences, prose around the object, a decision as a
bare string) and validate strictly with pydantic. Then every time and speaker is grounded in the
transcript: a time snaps to the segment it falls in, an owner must be a speaker of the recording;
what cannot be grounded is dropped, never guessed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .engine import THOUGHT_BLOCK
from .records import CLOCK_PATTERN, SPEAKER_LABEL, Segment

log = logging.getLogger("mediapipe_g4")


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("time", "start", mode="before", check_fields=False)
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return parse_time(value)


class TextAtTime(_Item):
    text: str = Field(min_length=1)
    time: float | None = None


class ActionItem(_Item):
    text: str = Field(min_length=1)
    owner: str | None = None
    due: str | None = None
    time: float | None = None

    @field_validator("owner", "due", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):  # "owner": {"name": "Bob", "role": "PM"}
            value = value.get("name") or next((v for v in value.values() if isinstance(v, str)), None)
        if isinstance(value, list):  # "owner": ["Bob"]; two owners are no one speaker (grounding drops them)
            value = " and ".join(str(v) for v in value if v) or None
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("due", mode="after")
    @classmethod
    def _said(cls, value: str | None) -> str | None:
        # The prompt asks for null when no date was said; models also write it as a word, which the notes would show.
        return None if value is None or not_said(value) else value


def not_said(value: str) -> bool:
    """Whether a field's text says it was not said: "N/A", "Not specified.", "(none)", "nicht angegeben"."""
    return bool(_NOT_SAID.fullmatch(value.strip().strip(".()[]").strip().casefold()))


_NOT_SAID = re.compile(r"|null|none|n/?a|-+|—|unknown|tbd|unspecified|not (?:specified|mentioned|said|given|stated|set|"
                       r"discussed)(?: (?:in|during) the (?:meeting|transcript|call|discussion))?|none (?:specified|"
                       r"given|mentioned|set)|no (?:specific |set |fixed )?(?:due date|deadline|date)(?: (?:given|set|"
                       r"specified|mentioned))?"
                       # the notes are in the meeting's language: German, French, Spanish, Italian, Portuguese
                       r"|(?:nicht|non|no|não) (?:angegeben|festgelegt|genannt|spécifiée?|précisée?|especificad[oa]|"
                       r"indicad[oa]|specificat[oa]|definid[oa])|keine(?:s| angabe)?|aucune?|ningun[oa]|nessuna?|"
                       r"nenhuma?|sin fecha|kein datum|pas de date|sem data|未指定|无")
# An item that says there is none ("No formal decisions were made.", "None raised."): no item, though models write it.
_NOTHING = re.compile(
    r"(?:none|n/?a|nothing|not applicable|-+|none (?:raised|made|noted|recorded|identified|mentioned|asked|given)|"
    # in the meeting's language: "Keine Entscheidungen getroffen.", "Ninguna.", "Aucune question."
    r"(?:keine?|aucune?|ningun[oa]|nessun[oa]?|nenhum[oa]?)(?:(?: (?:weiteren|offenen|autres?|otras?|otros?))? "
    r"(?:entscheidung(?:en)?|fragen?|aufgaben?|maßnahmen?|décisions?|questions?|actions?|tâches?|decisi(?:ón|ones)|"
    r"preguntas?|acci(?:ón|ones)|tareas?|decision[ei]|domand[ae]|azion[ei]|decis(?:ão|ões)|perguntas?|aç(?:ão|ões)|"
    r"tarefas?)(?: (?:wurden |wurde |n['’](?:a|ont) été |se |(?:è|sono) stat[oaei] |foi |foram )?(?:getroffen|gefasst|"
    r"beschlossen|vereinbart|gestellt|vergeben|festgelegt|prises?|soulevées?|posées?|attribuées?|décidées?|"
    r"tomad[oa]s?|tomaron|plantead[oa]s?|asignad[oa]s?|acordad[oa]s?|pres[oaei]|sollevat[oaei]|assegnat[oaei]|"
    r"levantad[oa]s?|atribuíd[oa]s?))?)?|"
    r"(?:there (?:were|was|are|is|have been|has been) )?"
    r"no(?: (?:formal|specific|clear|explicit|other|further|open|new))? (?:decisions?|action items?|actions?|"
    r"questions?|tasks?|items?|follow[- ]ups?)(?: (?:were|was|have been|has been))?(?: (?:made|raised|recorded|"
    r"discussed|identified|assigned|mentioned|noted|agreed|asked|taken|reached|given))?(?: (?:in|during) (?:the|this) "
    r"(?:meeting|call|discussion))?)\W*", re.IGNORECASE)


class Chapter(_Item):
    start: float
    title: str = Field(min_length=1)


class Notes(BaseModel):
    model_config = ConfigDict(extra="ignore")

    summary: str = ""
    decisions: list[TextAtTime] = []
    action_items: list[ActionItem] = []
    chapters: list[Chapter] = []
    questions: list[TextAtTime] = []

    @field_validator("decisions", "questions", "action_items", "chapters", mode="before")
    @classmethod
    def _strings_are_items(cls, value: Any, info: Any) -> Any:
        if value is None:  # "questions": null, for none
            return []
        if info.field_name == "chapters" and isinstance(value, dict) and value and all(
                ":" in k and parse_time(k) is not None for k in value):  # {"00:00": "Intro", "02:10": "Release"}
            value = [{"start": k, "title": v} for k, v in value.items()]
        if isinstance(value, (str, dict)):  # one decision as a string, one item as an object
            value = [value]
        if not isinstance(value, list):
            return value
        chapters = info.field_name == "chapters"
        items = [(_chapter_from_text(v) if chapters else {"text": v}) if isinstance(v, str) else
                 _renamed(v, _CHAPTER_FIELDS if chapters else _ITEM_FIELDS) if isinstance(v, dict) else v
                 for v in value if v not in (None, "", {})]
        if not chapters:
            items = [item for item in items if not (isinstance(item, dict) and isinstance(item.get("text"), str)
                                                    and _NOTHING.fullmatch(item["text"].strip()))]
        # One item that does not fit (no text, a chapter without a start) is left out, not all the notes with it.
        model = {"chapters": Chapter, "action_items": ActionItem}.get(info.field_name, TextAtTime)
        kept = []
        for item in items:
            try:
                model.model_validate(item)
            except ValidationError as exc:
                log.info("left out of the notes' %s: %r (%s)", info.field_name, item, exc.errors()[0]["msg"])
                continue
            kept.append(item)
        if chapters:  # chapters without a time cannot be placed; the summary, decisions and actions are worth more
            return kept
        return kept if kept or not items else items  # none fits: the error says why

    @field_validator("summary", mode="before")
    @classmethod
    def _summary_text(cls, value: Any) -> Any:
        if isinstance(value, list):  # some answers give the summary as bullet strings
            return " ".join(str(v) for v in value)
        if isinstance(value, str) and not_said(value):
            return ""  # "N/A"
        return "" if value is None else value


def _field_key(key: str) -> str:
    """A key as it is looked up: "actionItems", "Action Items", "action-items" -> "action_items"."""
    return re.sub(r"\W+", "_", re.sub(r"(?<=[a-z])(?=[A-Z])", "_", key).casefold()).strip("_")


# The names models give the notes' fields and their items' fields besides the prompt's (first): read, not lost.
_NOTES_FIELDS = {
    "summary": ("summary", "meeting_summary", "overview", "abstract", "tldr"),
    "decisions": ("decisions", "key_decisions", "decisions_made"),
    "action_items": ("action_items", "actions", "action_points", "tasks", "todos", "to_dos", "todo", "next_steps",
                     "follow_ups"),
    "chapters": ("chapters", "topics", "sections", "agenda"),
    "questions": ("questions", "open_questions", "unresolved_questions", "open_issues"),
}
_ITEM_FIELDS = {
    "text": ("text", "task", "action", "item", "description", "decision", "question", "content"),
    "owner": ("owner", "assignee", "assigned_to", "responsible", "owners", "who"),
    "due": ("due", "due_date", "deadline", "by_when"),
    "time": ("time", "timestamp", "start", "start_time", "at"),
}
_CHAPTER_FIELDS = {
    "start": ("start", "time", "timestamp", "start_time", "at"),
    "title": ("title", "topic", "name", "heading", "text"),
}


def _renamed(data: dict[str, Any], fields: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """`data` with each field under its own name, found under the first of its other names it is given by."""
    by_key: dict[str, Any] = {}
    for key, value in data.items():
        by_key.setdefault(_field_key(str(key)), value)
    out = dict(data)
    for field, names in fields.items():
        found = next((name for name in names if name in by_key), None)
        if found is not None:
            out[field] = by_key[found]
    return out


# "00:21 Release", "[00:21] - Release", "[00:00 - 00:20] Intro", "00:00-00:20: Intro"
_CHAPTER_TEXT = re.compile(rf"^\[?({CLOCK_PATTERN})(?:\s*(?:-|–|—|to)\s*{CLOCK_PATTERN})?\]?"
                           r"\s*[-–—:.]?\s*(?<=[\s\]:.–—-])(\S.*)$")


def _chapter_from_text(text: str) -> dict[str, Any]:
    """A chapter given as a line, "00:21 Mobile release" or "[00:21] - Mobile release"."""
    m = _CHAPTER_TEXT.match(text.strip())
    return {"start": m.group(1), "title": m.group(2)} if m else {"title": text}


class NotesParseError(ValueError):
    """The answer is not valid notes JSON; the message says why (it goes into the repair prompt)."""


class NotesCutOff(NotesParseError):
    """The answer's JSON object is not closed: it ran out of tokens."""


_CLOCK = re.compile(rf"^\[?({CLOCK_PATTERN})\]?$")
_ABOUT = re.compile(r"^(?:(?:at|~|≈|ca\.?|about|around|approximately|approx\.?|roughly)\s*)+|"
                    r"\s*\(?(?:approximately|approx\.?|or so|roughly)\)?$", re.IGNORECASE)
_CLOCK_UNIT = re.compile(rf"^(\[?{CLOCK_PATTERN}\]?)\s*(?:min(?:ute)?s?|hrs?|hours?)$", re.IGNORECASE)
_TIME = rf"\[?(?:{CLOCK_PATTERN}|\d+(?:\.\d+)?)\]?"
_RANGE = re.compile(rf"^({_TIME})\s*(?:-|–|—|to)\s*{_TIME}$", re.IGNORECASE)


# Times with units: "754s", "754 seconds", "12m34s", "1h 2m 3s"; and "minute 12".
_UNITS = re.compile(r"^(?:(\d+(?:\.\d+)?)\s*h(?:ours?)?\s*)?(?:(\d+(?:\.\d+)?)\s*m(?:in(?:utes?)?)?\s*)?"
                    r"(?:(\d+(?:\.\d+)?)\s*s(?:ec(?:onds?)?)?)?$")
_MINUTE = re.compile(r"^(?:at\s+)?min(?:ute)?\s+(\d+(?:\.\d+)?)$")


def parse_time(value: Any) -> float | None:
    """Seconds from 83, 83.5, "83", "01:23", "102:10", "[1:02:03]", "00:01:23,5", "83s", "1m23s", "minute 1", "~75",
    "at 1:15", "1:15 (approx.)", "1:15 min", and a range's start ("02:10-02:20"); None for null or anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        text = _ABOUT.sub("", value.strip())
        ranged = _RANGE.match(text)
        if ranged:
            return parse_time(ranged.group(1))
        text = _CLOCK_UNIT.sub(r"\1", text)
        try:
            seconds = float(text)
            return seconds if seconds >= 0 else None
        except ValueError:
            pass
        m = _CLOCK.match(text)
        if m:  # [h:]mm:ss[.frac], "00:12:34,5" with a subtitle file's decimal comma
            *hours, minutes, seconds = m.group(1).replace(",", ".").split(":")
            return int(hours[0] if hours else 0) * 3600 + int(minutes) * 60 + float(seconds)
        m = _UNITS.match(text.casefold())
        if m and any(m.groups()):
            h, mi, s = (float(g or 0) for g in m.groups())
            return h * 3600 + mi * 60 + s
        m = _MINUTE.match(text.casefold())
        if m:
            return float(m.group(1)) * 60
    return None


def extract_json(answer: str) -> Any:
    """The JSON object in a model answer: bare, in a ``` fence, or with prose around it. An object with the slips
    language models make (a trailing comma, single quotes, a raw newline or an unescaped quote in a string,
    Python's True/None, a comment, a missing comma) is read with `json_repair` rather than costing a second
    answer; one that is cut off (no closing brace: the answer ran out of tokens) is not patched up."""
    text = THOUGHT_BLOCK.sub("", answer).strip()  # a draft of the JSON in a thought left there is not the answer
    # A draft in one fence, then the answer in another: the biggest that holds an object is the answer's.
    fences = [f for f in re.findall(r"```(?:json)?\s*(.*?)```", text, re.DOTALL) if "{" in f]
    if fences:
        text = max(fences, key=len).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        raise NotesParseError("the answer holds no JSON object")
    candidate = text[start : end + 1]  # "" when no "}" follows: the answer was cut off, said below
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as exc:
        if _opens_more_than_it_closes(text[start:]):  # the last "}" closed an inner item: the answer was cut off
            raise NotesCutOff("the JSON object is not closed (the answer may have been cut off)") from exc
        # Braces in the prose around the object ("times are in {seconds}"), or a draft before it: from the first
        # "{" to the last "}" is more than one object; the biggest that reads is the answer's.
        objects = _top_level_objects(candidate)
        if len(objects) > 1:
            read = [(len(o), v) for o in objects if isinstance(v := _read_object(o), dict) and v]
            if read:
                return max(read, key=lambda r: r[0])[1]
        repaired = _repaired(candidate)
        if repaired is None:
            raise NotesParseError(f"the JSON does not parse: {exc}") from exc
        log.info("the model's JSON did not parse (%s); read it with json_repair", exc)
        return repaired


def _outside_strings(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of each character of `text` outside double-quoted JSON strings (quotes included)."""
    in_string, escaped = False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        else:
            in_string = char == '"'
            yield i, char


def _top_level_objects(text: str) -> list[str]:
    """The brace-balanced spans of `text` that no other holds, outside double-quoted strings."""
    spans, depth, first = [], 0, 0
    for i, char in _outside_strings(text):
        if char == "{":
            if depth == 0:
                first = i
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[first : i + 1])
    return spans


def _read_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _repaired(text)


def _opens_more_than_it_closes(text: str) -> bool:
    """Whether `text` (from an object's first brace on) leaves braces or brackets open: counted outside strings,
    and counted over all of it. One unescaped quote (`the 27" monitor`) turns strings inside out, and a whole
    answer looked cut off by the first count; a brace inside a string is rarer than such a quote."""
    return _left_open(_outside_strings(text)) and _left_open(enumerate(text))


def _left_open(chars: Iterable[tuple[int, str]]) -> bool:
    depth = 0
    for _, char in chars:
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return False
    return depth > 0


def _repaired(text: str) -> dict[str, Any] | None:
    """`text` read by json_repair, if that gives a non-empty object."""
    import json_repair

    try:
        value = json_repair.loads(text)
    except Exception:  # noqa: BLE001 - a repair that fails is a parse error, said by the caller
        return None
    return value if isinstance(value, dict) and value else None


def parse_notes(answer: str) -> Notes:
    data = extract_json(answer)
    if not isinstance(data, dict):
        raise NotesParseError("the answer's JSON is not an object")
    data = _renamed(data, _NOTES_FIELDS)
    if not set(data) & set(Notes.model_fields):
        # The notes inside an object of their own: {"notes": {...}}, {"meeting_notes": {...}}.
        inner = [_renamed(v, _NOTES_FIELDS) for v in data.values() if isinstance(v, dict)]
        data = next((v for v in inner if set(v) & set(Notes.model_fields)), data)
    if not set(data) & set(Notes.model_fields):
        raise NotesParseError(f"the JSON object has none of the notes' fields ({', '.join(Notes.model_fields)})")
    try:
        notes = Notes.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise NotesParseError(f"the JSON does not match the notes schema ({problems})") from exc
    if not notes.summary.strip() and not (notes.decisions or notes.action_items or notes.chapters or notes.questions):
        # Notes of a meeting with speech in it say something: empty ones are a failed answer, not notes.
        raise NotesParseError("the JSON object is empty: no summary and no decisions, action items, chapters or "
                              "questions")
    return notes


# --------------------------------------------------------------------------- grounding


def snap_time(time: float | None, segments: Sequence[Segment], *, tolerance: float = 5.0) -> float | None:
    """The start of the segment a time falls in (or the nearest within `tolerance` s); else None.

    A whole second is first read as the model saw the lines, `[mm:ss]` with the fraction dropped: 20 is the line
    that starts at 20.6 s, not the one before it that runs to 20.2 s."""
    if time is None or not segments:
        return None
    if float(time).is_integer():
        shown = next((seg for seg in segments if int(seg.start) == int(time)), None)
        if shown is not None:
            return round(shown.start, 3)
    best, best_gap = None, tolerance
    for seg in segments:
        if seg.start <= time <= seg.end:
            return round(seg.start, 3)
        gap = min(abs(time - seg.start), abs(time - seg.end))
        if gap <= best_gap:
            best, best_gap = seg.start, gap
    return round(best, 3) if best is not None else None


_TITLE = re.compile(r"^(?:dr|mr|mrs|ms|prof)\.?\s+")
_SEVERAL = re.compile(r"\s(?:and|or|&|\+|und|et|y|e)\s|[,/;&+]")


def _owner_key(text: str) -> str:
    """A name as owners are compared: lower case, without "@", a role in parentheses ("Bob (PM)") or a title."""
    text = re.sub(r"\([^)]*\)", " ", text.replace("@", " ")).casefold()
    return _TITLE.sub("", " ".join(text.split()).strip(" .,:;"))


def resolve_owner(owner: str | None, speakers: dict[str, str]) -> str | None:
    """A speaker id for an owner given as an id ("S2", "Speaker 2") or a name ("Bob", "@bob", "Bob (PM)", or a
    first name for "Bob Smith"); None if it names no speaker, or more than one."""
    key = _owner_key(owner or "")
    if not key or _SEVERAL.search(key):  # "Bob and Carol", "Bob/Carol": no one speaker
        return None
    label = SPEAKER_LABEL.fullmatch(key)
    if label:  # a speaker by number, whatever name it has; not a name's first word ("Speaker 1" is no "Speaker 2")
        sid = next((s for s in speakers if s.upper() == f"S{int(label.group(1))}"), None)
        if sid:
            return sid
    named = {sid: _owner_key(name) for sid, name in speakers.items()
             if name and not SPEAKER_LABEL.fullmatch(_owner_key(name))}
    for matches in ([sid for sid, name in named.items() if name == key],
                    [sid for sid, name in named.items() if name.split()[0] == key.split()[0]]):
        if len(matches) == 1:
            return matches[0]
        if matches:
            return None  # two speakers by that name: which one is a guess
    return None


def ground_notes(notes: Notes, segments: Sequence[Segment], speakers: dict[str, str]) -> dict[str, Any]:
    """The notes as the result JSON holds them, every time and owner grounded in the transcript.

    `speakers` maps speaker ids to display names. Times that fall outside the transcript become null;
    an owner who is not a speaker becomes null; chapters keep their order and lose duplicates.
    """
    def at(t: float | None) -> float | None:
        return snap_time(t, segments)

    chapters: list[dict[str, Any]] = []
    for ch in sorted(notes.chapters, key=lambda c: c.start):
        start = at(ch.start)
        same_topic = bool(chapters) and chapters[-1]["title"].casefold() == ch.title.strip().casefold()
        if start is not None and all(c["start"] != start for c in chapters) and not same_topic:
            chapters.append({"start": start, "title": ch.title.strip()})
    if chapters and segments and chapters[0]["start"] > segments[0].start:
        chapters[0]["start"] = round(segments[0].start, 3)  # the first chapter opens the meeting
    return {
        "summary": plain_text(notes.summary),
        "decisions": _once([{"text": plain_text(d.text), "time": at(d.time)} for d in notes.decisions]),
        "action_items": _once([
            {"text": plain_text(a.text), "owner": resolve_owner(a.owner, speakers),
             "due": (a.due or "").strip() or None, "time": at(a.time)}
            for a in notes.action_items
        ]),
        "chapters": [{**c, "title": plain_text(c["title"])} for c in chapters],
        "questions": _once([{"text": plain_text(q.text), "time": at(q.time)} for q in notes.questions]),
    }


def _once(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items without repeats (a model, or the merge of two parts' summaries, lists one decision twice): an item
    whose text, case and end punctuation aside, came before is left out, unless it names another owner or due date
    (one task for two people is two items); what the repeat adds, an owner the first did not name, is kept."""
    kept: list[tuple[str, dict[str, Any]]] = []  # (the text as compared, the item)
    for item in items:
        key = " ".join(item["text"].casefold().split()).strip(" .!;")
        same = next((k for text, k in kept if text == key
                     and all(k.get(f) is None or item.get(f) is None or k.get(f) == item.get(f)
                             for f in ("owner", "due"))), None)
        if same is None:
            kept.append((key, dict(item)))
            continue
        for field in ("owner", "due", "time"):
            if same.get(field) is None and item.get(field) is not None:
                same[field] = item[field]
    return [item for _, item in kept]


_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")


def plain_text(text: str) -> str:
    """A note's text without the markdown emphasis models like to add (**release**): the reports show text as it
    is, so the stars would show."""
    return _EMPHASIS.sub(r"\2", text).strip()
