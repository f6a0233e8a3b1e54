"""Reading references and results for `g4media eval`, and pairing them.

References, paired with results by name (`X.json` <-> `X.rttm`, `X.stm`, `X.truth.json`, `X.notes.json`):

- RTTM (who spoke when): `SPEAKER <file> <chan> <start> <duration> <NA> <NA> <speaker> <NA> <NA>`.
- STM (what was said, by whom, when): `<file> <chan> <speaker> <start> <end> [<label>] <words...>`.
- A segments JSON: `{"segments": [{"start", "end", "speaker", "text"}], "speakers": [{"id", "name"}]}` (the
  samples' `.truth.json`), or a bare list of segments. `text` or `speaker` may be left out.
- A notes reference `X.notes.json`: `{"decisions": ["phrase", ...], "action_items": [{"text", "owner"}]}`
  (owners by name; a decision may also be `{"text": ...}`).

When several files describe one recording, RTTM gives who-spoke-when and STM the words; a segments JSON fills
in what they leave out and gives the speakers' names. The metrics are in `metrics`, the scoring in `evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EvalError
from .result_fields import MAX_SECONDS, is_result, result_problem

# Labels that only number speakers (S1, spk_0, SPEAKER_01, Speaker 2, P05, MEE006): not names.
# Labels that name no one: "S1", "spk_2", "Speaker 3"; and a corpus's channel letters, "A" and "B" (CALLHOME,
# Switchboard), also after the conversation's id ("sw02001-A").
_GENERIC_LABEL = re.compile(r"^(?:(?:[a-z]{0,3}|speaker|spkr)[\s_-]*\d+|(?:\S*\d\S*[_-])?[a-z])$", re.IGNORECASE)
_STM_SKIP_SPEAKERS = {"inter_segment_gap", "excluded_region", "ignore_time_segment_in_scoring"}
STM_IGNORE_TEXT = "ignore_time_segment_in_scoring"  # NIST's words for "do not score what is said here"
log = logging.getLogger("mediapipe_g4")
_REF_SUFFIXES = (".truth.json", ".ref.json", ".reference.json", ".segments.json", ".notes.json", ".json",
                 ".rttm", ".stm")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class Utterance:
    start: float | None
    end: float | None
    speaker: str | None
    text: str
    scored: bool = True  # False: an STM line that marks a stretch sclite leaves out of the word scores


@dataclass(frozen=True)
class NotesItem:
    kind: str  # "decision" or "action_item"
    text: str
    owner: str | None = None


@dataclass(frozen=True)
class Reference:
    key: str
    turns: tuple[Turn, ...] | None = None  # who spoke when (DER, JER, speaker count, naming)
    utterances: tuple[Utterance, ...] | None = None  # what was said (WER, cpWER)
    names: tuple[tuple[str, str], ...] = ()  # speaker label -> name, from a segments JSON
    notes: tuple[NotesItem, ...] | None = None
    duration: float | None = None
    sources: tuple[str, ...] = ()
    excluded: tuple[tuple[float, float], ...] = ()  # an STM's stretches left out of WER and cpWER

    def name_of(self, label: str) -> str | None:
        """The speaker's name: from the JSON's speakers, else the label itself unless it only numbers them."""
        name = dict(self.names).get(label)
        if name:
            return name
        return None if _GENERIC_LABEL.match(label.strip()) else label


@dataclass
class _Parts:
    """What the files found so far say about one recording."""

    rttm: list[Turn] | None = None
    stm: list[Utterance] | None = None
    json: list[Utterance] | None = None
    names: dict[str, str] = field(default_factory=dict)
    notes: list[NotesItem] | None = None
    duration: float | None = None
    sources: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def _number(value: str, what: str, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise EvalError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise EvalError(f"{where}: {what} {value!r} is not a finite number")
    return x


def _end(end: float, what: str, where: str) -> float:
    """An end time as results have them: finite (an RTTM's 1e308 + 1e308 is inf) and at most MAX_SECONDS (115
    days: later is a typo, and the scores sum such times to inf, and DER to NaN)."""
    if not math.isfinite(end):
        raise EvalError(f"{where}: {what} is not a finite number")
    if end > MAX_SECONDS:
        raise EvalError(f"{where}: {what} is {end:g} s, more than {MAX_SECONDS} s (115 days): not a time in a "
                        f"recording")
    return end


def _duration(value: Any) -> float | None:
    """A recording's stated duration, None where it is not a time (text, NaN, 1e999 read as inf)."""
    return float(value) if isinstance(value, (int, float)) and 0 <= value <= MAX_SECONDS else None


def parse_rttm(text: str, origin: str = "RTTM") -> dict[str, list[Turn]]:
    """Turns per file id. SPEAKER lines only; other RTTM types, `;;` / `#` comments and blank lines are skipped."""
    turns: dict[str, list[Turn]] = {}
    expected = "expected `SPEAKER <file> <channel> <start> <duration> <NA> <NA> <speaker> <NA> <NA>`"
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith((";;", "#")):
            continue
        where = f"{origin} line {n}"
        if fields[0].upper() != "SPEAKER":
            if fields[0].isupper() and len(fields) >= 5:
                continue  # another RTTM type (SPKR-INFO, LEXEME, ...): not who-spoke-when
            raise EvalError(f"{where} is not an RTTM line ({line.strip()[:60]!r}); {expected}")
        if len(fields) < 8:
            raise EvalError(f"{where} has {len(fields)} fields; {expected}")
        start = _number(fields[3], "start", where)
        duration = _number(fields[4], "duration", where)
        if start < 0 or duration < 0:
            raise EvalError(f"{where}: start and duration must not be negative ({fields[3]} {fields[4]})")
        end = _end(start + duration, f"the end ({fields[3]} + {fields[4]})", where)
        if duration > 0:
            turns.setdefault(fields[1], []).append(Turn(start, end, fields[7]))
    return turns


def parse_stm(text: str, origin: str = "STM") -> dict[str, list[Utterance]]:
    """Utterances per file id. `;;` comments and blank lines are skipped; NIST's excluded regions (an
    `inter_segment_gap` line, or words that are just `ignore_time_segment_in_scoring`, as TED-LIUM marks the talk's
    unreliable stretches) come as utterances that are not `scored`."""
    utts: dict[str, list[Utterance]] = {}
    expected = "expected `<file> <channel> <speaker> <start> <end> [<label>] <words...>`"
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith((";;", "#")):
            continue
        where = f"{origin} line {n}"
        fields = stripped.split(None, 5)
        if len(fields) < 5:
            raise EvalError(f"{where} has {len(fields)} fields; {expected}")
        start = _number(fields[3], "start", where)
        end = _number(fields[4], "end", where)
        if start < 0 or end < start:
            raise EvalError(f"{where}: the times {fields[3]}..{fields[4]} are not a span (start >= 0, end >= start)")
        _end(end, "the end", where)
        words = fields[5] if len(fields) > 5 else ""
        if words.startswith("<"):  # the optional <o,f0,male> label
            close = words.find(">")
            if close < 0:
                raise EvalError(f"{where}: the label {words.split()[0]!r} has no closing '>'; {expected}")
            words = words[close + 1:]
        scored = fields[2].lower() not in _STM_SKIP_SPEAKERS and words.strip().lower() != STM_IGNORE_TEXT
        utts.setdefault(fields[0], []).append(Utterance(start, end, fields[2], words.strip() if scored else "",
                                                        scored))
    return utts


def parse_segments_json(data: Any, origin: str = "JSON") -> tuple[list[Utterance], dict[str, str], float | None]:
    """(utterances, names by speaker id, duration) from `{"segments": [...], "speakers": [...]}` or a list."""
    if isinstance(data, list):
        data = {"segments": data}
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise EvalError(f"{origin} has no list of segments; expected {{\"segments\": [{{\"start\", \"end\", "
                        f"\"speaker\", \"text\"}}]}}")
    utts = []
    for i, seg in enumerate(data["segments"]):
        where = f"{origin} segment {i}"
        if not isinstance(seg, dict):
            raise EvalError(f"{where} is not an object with start, end, speaker and text")
        start = end = None
        if seg.get("start") is not None or seg.get("end") is not None:
            try:
                start, end = float(seg["start"]), float(seg["end"])
            except (KeyError, TypeError, ValueError):
                raise EvalError(f"{where} needs numeric start and end (got {seg.get('start')!r}, "
                                f"{seg.get('end')!r})") from None
            if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
                raise EvalError(f"{where}: {start}..{end} is not a span (start >= 0, end >= start)")
            _end(end, "the end", where)
        text = seg.get("text")
        if text is not None and not isinstance(text, str):
            raise EvalError(f"{where}: text must be a string")
        speaker = seg.get("speaker")
        utts.append(Utterance(start, end, None if speaker is None else str(speaker), text or ""))
    names = {}
    for spk in data.get("speakers") or []:
        if isinstance(spk, dict) and spk.get("id") is not None and spk.get("name"):
            names[str(spk["id"])] = str(spk["name"])
    return utts, names, _duration(data.get("duration"))


def parse_notes_reference(data: Any, origin: str = "notes JSON") -> list[NotesItem]:
    """`{"decisions": [phrase | {"text"}], "action_items": [phrase | {"text", "owner"}]}`."""
    if not isinstance(data, dict) or not ({"decisions", "action_items"} & set(data)):
        raise EvalError(f"{origin} is not a notes reference; expected {{\"decisions\": [\"...\"], "
                        f"\"action_items\": [{{\"text\": \"...\", \"owner\": \"Name\"}}]}}")
    items = []
    for kind, key in (("decision", "decisions"), ("action_item", "action_items")):
        entries = data.get(key) or []
        if not isinstance(entries, list):
            raise EvalError(f"{origin}: {key} must be a list")
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"text": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("text"), str) or not entry["text"].strip():
                raise EvalError(f"{origin}: {key}[{i}] needs a non-empty text")
            owner = entry.get("owner")
            items.append(NotesItem(kind, entry["text"], str(owner) if owner else None))
    return items


def _ref_stem(path: Path) -> str:
    name = path.name
    for suffix in _REF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise EvalError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path} is not valid JSON ({exc}); fix or remove it") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a Windows editor's byte-order mark is no part of line one
    except OSError as exc:
        raise EvalError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path} is not UTF-8 text ({exc})") from exc


def load_references(path: Path) -> dict[str, Reference]:
    """References under `path` (a file or a folder, searched recursively), keyed by relative path without suffix.

    A multi-recording RTTM/STM file gives one reference per file id (key: its folder + the file id); a file
    with one file id is keyed by its own name, so `call.rttm` pairs with `call.json` whatever its file id.
    """
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path} does not exist; give a reference file (.rttm, .stm, .json) or a folder of them")
    single = path.is_file()
    files = [path] if single else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in {".rttm", ".stm", ".json"}
        and not any(part.startswith(".") for part in p.relative_to(path).parts))
    parts: dict[str, _Parts] = {}

    def key_for(file: Path, stem: str) -> str:
        rel = Path(stem) if single else file.parent.relative_to(path) / stem
        return rel.as_posix()

    for file in files:
        suffix = file.suffix.lower()
        if suffix == ".rttm":
            by_id = parse_rttm(_read_text(file), str(file))
            for fid, turns in by_id.items():
                p = _claim(parts, key_for(file, _ref_stem(file) if len(by_id) == 1 else fid), "rttm", file)
                p.rttm = turns
                p.sources.append(str(file))
        elif suffix == ".stm":
            by_id = parse_stm(_read_text(file), str(file))
            for fid, utts in by_id.items():
                p = _claim(parts, key_for(file, _ref_stem(file) if len(by_id) == 1 else fid), "stm", file)
                p.stm = utts
                p.sources.append(str(file))
        elif suffix == ".json":
            data = _read_json(file)
            if is_result(data):
                continue  # a result that happens to sit among the references
            is_notes = file.name.lower().endswith(".notes.json") or (
                isinstance(data, dict) and "segments" not in data and {"decisions", "action_items"} & set(data))
            if not is_notes and not (isinstance(data, list) or (isinstance(data, dict) and "segments" in data)):
                if single:
                    raise EvalError(f"{file} is neither a segments reference nor a notes reference")
                continue  # some other JSON file
            p = _claim(parts, key_for(file, _ref_stem(file)), "notes" if is_notes else "json", file)
            if is_notes:
                p.notes = parse_notes_reference(data, str(file))
            else:
                p.json, names, p.duration = parse_segments_json(data, str(file))
                p.names.update(names)
            p.sources.append(str(file))
    if not parts:
        raise EvalError(f"no references found in {path}; give RTTM (.rttm), STM (.stm) or segments JSON files "
                        f"named after the recordings")
    refs = {}
    for key, p in parts.items():
        json_turns = [Turn(u.start, u.end, u.speaker) for u in p.json or []
                      if u.start is not None and u.speaker is not None and u.end > u.start]
        # A speaker's stretch left out of the word scores is still their speech (TED-LIUM's), a gap is no one's
        stm_turns = [Turn(u.start, u.end, u.speaker) for u in p.stm or []
                     if u.end > u.start and u.speaker.lower() not in _STM_SKIP_SPEAKERS]
        turns = p.rttm if p.rttm is not None else json_turns or stm_turns or None
        text_source = ([u for u in p.stm if u.scored] if p.stm is not None
                       else (p.json if p.json and any(u.text for u in p.json) else None))
        refs[key] = Reference(
            key=key, turns=tuple(turns) if turns is not None else None,
            utterances=tuple(text_source) if text_source is not None else None,
            names=tuple(p.names.items()), notes=tuple(p.notes) if p.notes is not None else None,
            duration=p.duration, sources=tuple(p.sources),
            excluded=tuple((u.start, u.end) for u in p.stm or [] if not u.scored))
    return refs


def _claim(parts: dict[str, _Parts], key: str, kind: str, file: Path) -> _Parts:
    """The parts of `key`, refusing a second file that gives the same kind of reference for one recording."""
    p = parts.setdefault(key, _Parts())
    if getattr(p, kind) is not None:
        raise EvalError(f"two references of the same kind for {key!r}: {file} and {', '.join(p.sources)}; "
                        f"keep one of them")
    return p


def diarization_result(file_id: str, turns: list[Turn], duration: float | None = None) -> dict[str, Any]:
    """Who-spoke-when alone (an RTTM, or `g4media diarize --json`) as a result without words: scored for DER,
    JER and the speaker count; WER, naming and notes are left out."""
    return {"source": {"name": file_id, "duration": duration}, "diarization_only": True,
            "segments": [{"start": t.start, "end": t.end, "speaker": t.speaker, "text": ""} for t in turns]}


def _diarize_output_turns(data: Any, origin: str) -> list[Turn] | None:
    """The turns of `g4media diarize --json` output ({"duration", "speakers", "turns"}), else None."""
    if not (isinstance(data, dict) and isinstance(data.get("turns"), list) and "segments" not in data):
        return None
    turns = []
    for n, t in enumerate(data["turns"]):
        try:
            turns.append(Turn(float(t["start"]), float(t["end"]), str(t["speaker"])))
        except (KeyError, TypeError, ValueError):
            raise EvalError(f"{origin}: turns[{n}] needs a numeric start and end and a speaker") from None
        if not 0 <= turns[-1].start <= turns[-1].end:  # NaN too
            raise EvalError(f"{origin}: turns[{n}] is not a span (start >= 0, end >= start)")
        _end(turns[-1].end, f"turns[{n}].end", origin)
    return turns


def load_results(path: Path) -> list[tuple[str, Path, dict]]:
    """(key, path, result) for every result under `path`: a result JSON, or a folder (e.g. a batch output)
    searched recursively for `X.json` files that hold `source` and `segments`; other files are skipped.
    Who-spoke-when alone counts too: an RTTM (one result per file id) or `g4media diarize --json` output, given as
    the file, or in a folder that holds no full results."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path} does not exist; give a result JSON (from transcribe/summarize) or a folder of them")
    if path.is_file():
        if path.suffix.lower() == ".rttm":
            found = _diarized(path, path.stem, _read_text(path))
            if not found:
                raise EvalError(f"{path} has no SPEAKER lines: nothing to score")
            return found
        data = _read_json(path)
        diarized = _diarized(path, path.stem, data)
        if diarized is not None:
            return diarized
        if not is_result(data):
            raise EvalError(f"{path} is not a g4media result (no source and segments); give the X.json that "
                            f"`g4media transcribe` or `summarize` wrote, an RTTM, or `g4media diarize --json`'s output")
        _check_result(path, data)
        return [(path.stem, path, data)]
    found, diarized = [], []
    for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in (".json", ".rttm") and p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        key = (rel.parent / file.stem).as_posix()
        try:
            data = file.read_text(encoding="utf-8-sig")
            data = json.loads(data) if file.suffix.lower() == ".json" else data
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # not ours
        if is_result(data):
            _check_result(file, data)
            found.append((key, file, data))
        else:
            try:
                diarized += _diarized(file, key, data) or []
            except EvalError:
                continue  # not who-spoke-when after all
    if not found and not diarized:
        raise EvalError(f"no results found in {path}; run `g4media transcribe`, `summarize` or `batch` with "
                        f"`-o {path}` first (or `g4media diarize --rttm` into it)")
    return found or diarized  # a folder of full results may hold RTTMs too (references, say): those are not results


def _diarized(file: Path, key: str, data: Any) -> list[tuple[str, Path, dict]] | None:
    """Results of who-spoke-when alone from an RTTM's text or a `diarize --json` object, else None."""
    if isinstance(data, str):
        by_id = parse_rttm(data, str(file))
        return [(key if len(by_id) == 1 else (Path(key).parent / fid).as_posix(), file, diarization_result(fid, turns))
                for fid, turns in by_id.items()]
    turns = _diarize_output_turns(data, str(file))
    if turns is None:
        return None
    return [(key, file, diarization_result(Path(key).name, turns, _duration(data.get("duration"))))]


def _check_result(path: Path, data: dict) -> None:
    """A result whose fields an edit broke is named, with the field, rather than scored (or failed on) blind."""
    problem = result_problem(data)
    if problem:
        raise EvalError(f"{path}: {problem}; fix it and run again")


def pair(results: list[tuple[str, Path, dict]], references: dict[str, Reference],
         ) -> tuple[list[tuple[Path, dict, Reference]], list[str], list[str]]:
    """(pairs, results without a reference, references without a result). A result pairs with the reference
    of the same relative path, else of the same name (the JSON's stem, then the recording's stem) if that
    name is unique among the references; else the same, with names in their RTTM file id form (whitespace as
    `_`: `diarize --rttm` writes "with space.wav" as `with_space`), both ways."""
    from .diarize import rttm_file_id

    by_stem: dict[str, list[Reference]] = {}
    by_id: dict[str, list[Reference]] = {}
    for key, ref in references.items():
        by_stem.setdefault(key.rsplit("/", 1)[-1], []).append(ref)
        for name in {rttm_file_id(key), rttm_file_id(key.rsplit("/", 1)[-1])}:
            by_id.setdefault(name, []).append(ref)
    found_for: list[tuple[Path, dict, Reference | None, bool]] = []  # (result path, result, reference, by path)
    for key, rpath, result in results:
        ref = references.get(key)
        source_name = str((result.get("source") or {}).get("name") or "")
        stems = [s for s in (key.rsplit("/", 1)[-1], Path(source_name).stem if source_name else "") if s]
        as_ids = [by_id.get(rttm_file_id(name), []) for name in (key, *stems)]
        for found in [*(by_stem.get(stem, []) for stem in stems), *as_ids] if ref is None else ():
            if len(found) == 1:
                ref = found[0]
                break
        if ref is None:
            clash = next((found for found in as_ids if len(found) > 1), None)
            if clash:  # e.g. "a b.rttm" and "a  b.stm" for an RTTM's `a_b`: neither is taken, and it is said
                log.warning("%s pairs with no reference: %s all have its name (whitespace as _, as in RTTM file ids); "
                            "rename all but one", rpath, ", ".join(sorted(repr(r.key) for r in clash)))
        found_for.append((rpath, result, ref, key in references))
    # A reference found by name for several results (two standup.json of a batch's dated folders) is none of
    # theirs: which meeting it is of cannot be told, and scoring both against it scored one against the other's.
    by_name = Counter(ref.key for _, _, ref, exact in found_for if ref is not None and not exact)
    by_path = {ref.key for _, _, ref, exact in found_for if ref is not None and exact}
    pairs, unpaired, used = [], [], set()
    for rpath, result, ref, exact in found_for:
        if ref is not None and not exact and (by_name[ref.key] > 1 or ref.key in by_path):
            log.warning("%s pairs with no reference: %r has the name of several results; put each reference at its "
                        "result's path in the folder", rpath, ref.key)
            ref = None
        if ref is None:
            unpaired.append(str(rpath))
        else:
            pairs.append((rpath, result, ref))
            used.add(ref.key)
    missing = [key for key in references if key not in used]
    return pairs, unpaired, missing
