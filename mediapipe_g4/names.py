"""Speaker names, only where the recording gives evidence.

The model reads the transcript and proposes, per speaker id, a name with the quote and time that show
it ("Thanks, Bob" right after S2 spoke). A proposal counts only if the quote is in the transcript near
that time, holds the name, and is said by that speaker as their own name or by someone else to them (set off
by a comma, or after "thanks") in the turn just before or after theirs; otherwise the speaker stays
`Speaker N`. `--names S1=Alice` overrides.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from .errors import G4Error
from .notes_schema import NotesParseError, extract_json, parse_time
from .prompts import with_vocabulary
from .records import CLOCK_PATTERN, SPEAKER_LABEL, Segment, Speaker

NAMES_PROMPT = (
    "Below is a meeting transcript; each line is `[mm:ss] speaker-id: text`.\n"
    "Find each speaker's real name, but ONLY where the transcript itself shows it: someone addresses them "
    "by name right before or after they speak (\"Thanks, Bob\"), or they introduce themselves (\"I'm Alice\").\n"
    "Answer with one JSON object mapping speaker ids to {{\"name\", \"quote\", \"time\"}}, where quote is the exact "
    "words from the transcript that show the name and time is that line's time in seconds. Leave out every "
    "speaker whose name the transcript does not show. Speaker ids: {ids}.\n"
    "Output only the JSON."
)

_EVIDENCE_WINDOW = 90.0  # seconds: a quote must be said this close to the time the model gives


def default_name(speaker_id: str) -> str:
    """S2 -> Speaker 2 (ids are numbered in order of first appearance)."""
    return f"Speaker {speaker_id[1:]}" if speaker_id[1:].isdigit() else speaker_id


_SIDE_KEYS = {"LEFT": 1, "RIGHT": 2}


def parse_name_overrides(text: str | None) -> dict[str, str]:
    """`S1=Alice,S2=Bob` -> {"S1": "Alice", "S2": "Bob"}; a call's sides by where they were heard: `left=Alice`
    -> {"SIDE1": "Alice"} (`right`: SIDE2, `track2` or `side2`: SIDE2; see `resolve_side_names`). A clear error
    for anything else."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        sid, sep, name = item.partition("=")
        sid, name = sid.strip().upper(), name.strip()
        numbered = re.fullmatch(r"(?:TRACK|SIDE)([1-9]\d*)", sid)
        side = _SIDE_KEYS.get(sid) or (int(numbered.group(1)) if numbered else None)
        if side:
            sid = f"SIDE{side}"
        if not sep or not re.fullmatch(r"S\d+|SIDE[1-9]\d*", sid) or not name or "=" in name:
            raise G4Error(f"--names takes pairs like S1=Alice,S2=Bob, separated by commas (or, for a call, "
                          f"left=Alice,right=Bob); got {item.strip()!r}")
        if sid in out:
            raise G4Error(f"--names names {item.partition('=')[0].strip()} twice ({out[sid]!r} and {name!r})")
        out[sid] = name
    return out


def resolve_side_names(overrides: dict[str, str], sides: dict[str, int], speakers: Sequence[str] | None = None
                       ) -> tuple[dict[str, str], list[str]]:
    """--names given by side (`SIDE1`: the left channel or the first track) as names of speakers (`S2`): the one
    speaker found on that side. Also what to tell the user about a side name that names no one: the speakers were
    not found side by side, or the side has several, or (given `speakers`, the ids found) an id that is no one's.
    A name given by id wins over one given by side."""
    out = {k: v for k, v in overrides.items() if not k.startswith("SIDE")}
    problems = []
    if speakers is not None:
        for sid in out:
            if sid not in speakers:
                problems.append(f"--names: there is no speaker {sid} (the speakers are {', '.join(speakers) or 'none'})"
                                f"; {out[sid]!r} names no one")
    for key, name in overrides.items():
        if not key.startswith("SIDE"):
            continue
        side = int(key[4:])
        on_side = [spk for spk, s in sides.items() if s == side]
        if len(on_side) == 1:
            out.setdefault(on_side[0], name)
        elif not sides:
            problems.append(f"--names: {name!r} is given by side, but the speakers were not found side by side; "
                            "name them by id (S1=...)")
        else:
            held = ", ".join(on_side) or "no speaker"
            problems.append(f"--names: side {side} holds {held}, so {name!r} names no one speaker; name them by id")
    return out, problems


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^\w]+", " ", text).strip()


def transcript_lines(segments: Sequence[Segment], names: dict[str, str] | None = None) -> list[str]:
    from .prompts import clock

    return [f"[{clock(s.start)}] {(names or {}).get(s.speaker, s.speaker)}: {s.text}" for s in segments if s.text]


def names_prompt(segments: Sequence[Segment], max_chars: int = 60_000, vocabulary: tuple[str, ...] = ()) -> str:
    """The naming prompt; for long meetings only the lines near candidate names (a capitalized word inside a
    sentence, in any script with capitals, or an introduction: "меня зовут", "私は"), else the opening lines."""
    ids = sorted({s.speaker for s in segments}, key=lambda x: int(x[1:]) if x[1:].isdigit() else 0)
    lines = transcript_lines(segments)
    if sum(len(ln) + 1 for ln in lines) > max_chars:
        keep = set()
        for i, seg in enumerate(segments):
            if _may_name(seg.text):
                keep.update({i - 1, i, i + 1})
        if keep:  # else (a script without capitals, no introduction): the opening lines, where people introduce
            lines = [ln for i, ln in enumerate(lines) if i in keep]
        size = sum(len(ln) + 1 for ln in lines)  # kept as lines go: summed anew per line it grew as lines squared
        while size > max_chars:
            size -= len(lines.pop()) + 1
    return with_vocabulary(NAMES_PROMPT.format(ids=", ".join(ids)), vocabulary) + "\n\n" + "\n".join(lines)


# What the transcript line puts before the words ("[00:14] S1: "), which a quote copied whole brings along.
_LINE_HEAD = re.compile(rf"^\s*(?:\[?{CLOCK_PATTERN}\]?\s*)?(?:{SPEAKER_LABEL.pattern}\s*:\s*)?", re.IGNORECASE)


# How people say their own name, as `_norm` writes it ("I'm" is "i m"): before the name, or after it ("Bob here").
_INTRO_BEFORE = (r"i m|i am|im|my name is|my name s|this is|it s|call me|"
                 r"ich bin|ich hei(?:ß|ss)e|mein name ist|hier ist|je suis|je m appelle|moi c est|"
                 r"soy|me llamo|mi nombre es|sono|mi chiamo|sou|me chamo|meu nome é|ik ben|mijn naam is|меня зовут|я")
_INTRO_BEFORE_NO_SPACES = r"我是|我叫|私は|저는"  # scripts without spaces between words
_INTRO_AFTER = r"here|speaking|です|と申します|입니다"


def _may_name(text: str) -> bool:
    """Whether a line may hold a name: a capitalized word not at a sentence's start ("Thanks, Bob", "Спасибо,
    Иван", "over to you, McKenzie"; not "NASA"), or an introduction in a language `_introduces` knows."""
    for word in re.finditer(r"\w+", text):
        w, before = word.group(), text[:word.start()].rstrip()
        if before and not before.endswith((".", "!", "?", "。", "！", "？")) and w[0].isupper() and w[1:2].islower():
            return True
    n_text = _norm(text)
    return bool(re.search(rf"(?<!\w)(?:{_INTRO_BEFORE})\s+\w|(?:{_INTRO_BEFORE_NO_SPACES})|"
                          rf"\w\s*(?:{_INTRO_AFTER})(?!\w)", n_text))


def _introduces(n_name: str, n_text: str, edge: str) -> bool:
    """Whether the (normalized) text has its speaker say the (normalized) name as their own."""
    name = re.escape(n_name)
    return bool(re.search(rf"(?<!\w)(?:{_INTRO_BEFORE})\s+{name}{edge}|(?:{_INTRO_BEFORE_NO_SPACES})\s*{name}{edge}|"
                          rf"{edge}{name}\s*(?:{_INTRO_AFTER})(?!\w)", n_text))


# Words after which a name is said to someone ("Thanks Bob", "over to you Bob"), without a comma between.
_TO_SOMEONE = (r"hi|hello|hey|thanks|thank you|(?:thanks|thank you) (?:a lot|so much|very much|again)|welcome|"
               r"good (?:morning|afternoon|evening)|great job|well done|sorry|bye|cheers|go ahead|over to you|"
               r"your turn|please|danke|merci|gracias|grazie|obrigad[oa]|hallo|salut|hola|ciao|bonjour|"
               r"guten (?:morgen|tag)|buenos d[ií]as|buongiorno|bom dia|спасибо|привет")
_SET_OFF = r"(?:[.!?,;:…—–，。！？、；：]|\s-(?=\s))"  # what sets a name off from the sentence around it
# Words that may open a sentence before a name said to someone ("Okay Bob", "So Bob, the update?")
_LEAD = r"okay|ok|so|well|right|alright|all right|yes|yeah|no|now|and|oh"


def _said_to(name: str, text: str) -> bool:
    """Whether `text` says `name` to someone: set off by punctuation ("Bob, can you start?", "Thanks, Bob.", "So Bob,
    the update?", "Okay Bob") or after a greeting or thanks ("Hi Bob how are you", "thanks Bob for that"); not as
    what a sentence is about ("Carol is out sick today", "let's ask Carol": the one who speaks next is not Carol).
    A surname may follow the name ("Thanks, Bob Smith."); "Mary Jane" is "Mary-Jane"."""
    said = unicodedata.normalize("NFKC", text)
    called = r"[\s‐-]+".join(re.escape(word) for word in re.split(r"[\s‐-]+", name.strip()) if word)
    surname = r"(?-i:\s+[A-Z][\w'’-]*)?"
    opens = r"(?:^|[.!?…。！？]\s*)"  # a sentence's start
    # not the first of a list of names ("Bob, Carol and I met yesterday": about them, not to Bob)
    listed = r"(?!\s*,\s*(?-i:[A-Z])[\w'’-]*(?![\w'’-])(?:\s*,|\s+(?:and|und|et|y|e|&)\s))"
    set_off = rf"(?:^|{_SET_OFF}\s*|{opens}(?:{_LEAD}),?\s+){called}{surname}{listed}(?=\s*(?:{_SET_OFF}|$))"
    greeted = rf"\b(?:{_TO_SOMEONE}),?\s+{called}(?![\w'’‐-])"  # not "thanks Bob's team", "merci Jean-Pierre"
    return re.search(rf"{set_off}|{greeted}", said, re.IGNORECASE) is not None


def _beside(segments: Sequence[Segment], i: int) -> set[str]:
    """The speakers of the turns just before and just after segment i that are not its own speaker's."""
    own = segments[i].speaker
    before = next((s.speaker for s in reversed(segments[:i]) if s.speaker != own), None)
    after = next((s.speaker for s in segments[i + 1:] if s.speaker != own), None)
    return {s for s in (before, after) if s}


def _evidence_ok(sid: str, name: str, quote: str, time: float | None, segments: Sequence[Segment]) -> float | None:
    """The time of a segment near `time` whose text holds `quote`, which itself holds `name`, and which shows the name
    is `sid`'s: `sid` says it as their own ("I'm Carol"), or someone else says it to them, in the turn just before or
    after theirs, to them ("Thanks, Bob"). The one who says "Thanks, Bob", and a name only mentioned ("Bob is out
    today"), are not Bob."""
    n_name, n_quote = _norm(name), _norm(_LINE_HEAD.sub("", quote, count=1))
    # A whole word of the quote; in a script without spaces between words (Chinese, Japanese, Thai) any part of it.
    edge = r"\b" if n_name and n_name[0].lower() != n_name[0].upper() else ""
    if not n_name or not n_quote or not re.search(rf"{edge}{re.escape(n_name)}{edge}", n_quote):
        return None
    for i, seg in enumerate(segments):
        if time is not None and not (seg.start - _EVIDENCE_WINDOW <= time <= seg.end + _EVIDENCE_WINDOW):
            continue
        text = _norm(seg.text)
        if n_quote not in text:
            continue
        own = _introduces(n_name, text, edge)  # then it is the name of the one who says it, and no one else's
        # In a script without spaces between words a name need not be set off: said near them is taken as to them
        to_them = not edge or _said_to(name, seg.text)
        if (own and seg.speaker == sid) or (not own and to_them and seg.speaker != sid
                                            and sid in _beside(segments, i)):
            return round(seg.start, 3)
    return None


def _is_a_role(name: str) -> bool:
    """"the manager", "our host": what someone is, not their name (a name is capitalized where its script has case)."""
    first = name.split()[0].casefold()
    lower_only = any(c.islower() for c in name) and not any(c.isupper() for c in name)
    return lower_only or first in ("the", "a", "an", "our", "my", "your", "their")


def parse_names(answer: str, segments: Sequence[Segment]) -> dict[str, dict[str, Any]]:
    """Names with evidence from the model's answer: {id: {"name", "quote", "time"}}; the rest dropped."""
    try:
        data = extract_json(answer)
    except NotesParseError:
        return {}
    if not isinstance(data, dict):
        return {}
    ids = {s.speaker for s in segments}
    found: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for sid, entry in data.items():
        label = SPEAKER_LABEL.fullmatch(str(sid).strip())  # "S2", and "Speaker 2" as models also write it
        sid = f"S{int(label.group(1))}" if label else str(sid).strip().upper()
        if sid not in ids or not isinstance(entry, dict):
            continue
        name = str(entry.get("name") or "").strip()
        quote = str(entry.get("quote") or "").strip()
        if not name or len(name) > 40 or name.casefold() in taken or name.casefold() == "speaker" \
                or SPEAKER_LABEL.fullmatch(name):
            continue
        if _is_a_role(name):
            continue
        when = _evidence_ok(sid, name, quote, parse_time(entry.get("time")), segments)
        if when is None:
            continue
        taken.add(name.casefold())
        found[sid] = {"name": name, "quote": quote, "time": when}
    return found


def build_speakers(
    segments: Sequence[Segment],
    found: dict[str, dict[str, Any]] | None = None,
    overrides: dict[str, str] | None = None,
    speaker_ids: Sequence[str] = (),
) -> list[Speaker]:
    """Every speaker with a display name and talk time, in order of first appearance."""
    order: list[str] = []
    talk: dict[str, float] = {}
    for seg in segments:
        if seg.speaker not in talk:
            order.append(seg.speaker)
            talk[seg.speaker] = 0.0
        talk[seg.speaker] += max(0.0, seg.end - seg.start)
    for sid in speaker_ids:
        if sid not in talk:
            order.append(sid)
            talk[sid] = 0.0
    found, overrides = found or {}, overrides or {}
    speakers = []
    for sid in order:
        if sid in overrides:
            name, evidence = overrides[sid], ({"quote": "set with --names", "time": None},)
        elif sid in found:
            name, evidence = found[sid]["name"], ({"quote": found[sid]["quote"], "time": found[sid]["time"]},)
        else:
            name, evidence = default_name(sid), ()
        speakers.append(Speaker(id=sid, name=name, talk_time=round(talk[sid], 3), evidence=evidence))
    return speakers
