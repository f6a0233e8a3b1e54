"""Score results (`X.json`) against references: WER, cpWER, DER/JER, speaker counts, naming, notes recall, speed.

References, paired with results by name (`X.json` <-> `X.rttm`, `X.stm`, `X.truth.json`, `X.notes.json`):

- RTTM (who spoke when): `SPEAKER <file> <chan> <start> <duration> <NA> <NA> <speaker> <NA> <NA>`.
- STM (what was said, by whom, when): `<file> <chan> <speaker> <start> <end> [<label>] <words...>`.
- A segments JSON: `{"segments": [{"start", "end", "speaker", "text"}], "speakers": [{"id", "name"}]}` (the
  samples' `.truth.json`), or a bare list of segments. `text` or `speaker` may be left out.
- A notes reference `X.notes.json`: `{"decisions": ["phrase", ...], "action_items": [{"text", "owner"}]}`
  (owners by name; a decision may also be `{"text": ...}`).

When several files describe one recording, RTTM gives who-spoke-when and STM the words; a segments JSON fills
in what they leave out and gives the speakers' names. Each metric's rule is in its function's docstring below
and in the README ("Evaluating on your own recordings").
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import G4Error
from .records import STAGES

COLLAR = 0.25  # seconds on EACH side of every reference boundary, as NIST md-eval `-c 0.25`
NOTES_THRESHOLD = 0.6  # share of a reference phrase's content words a notes item must contain
NORMALIZATION = ("Whisper's EnglishTextNormalizer (lower case, punctuation and fillers removed, contractions "
                 "expanded, numbers written as digits, British spellings kept); BasicTextNormalizer for a result "
                 "whose --language is not English")

# Labels that only number speakers (S1, spk_0, SPEAKER_01, Speaker 2, P05, MEE006): not names.
_GENERIC_LABEL = re.compile(r"^(?:[a-z]{0,3}|speaker|spkr)[\s_-]*\d+$", re.IGNORECASE)
_DEFAULT_NAME = re.compile(r"^speaker[\s_-]*\d+$", re.IGNORECASE)
_STM_SKIP_SPEAKERS = {"inter_segment_gap", "excluded_region", "ignore_time_segment_in_scoring"}
_REF_SUFFIXES = (".truth.json", ".ref.json", ".reference.json", ".segments.json", ".notes.json", ".json",
                 ".rttm", ".stm")
_STOP_WORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just let me more most my no nor not of off on once only or other
our ours out over own same she should so some such than that the their them then there these they this those
through to too under until up us very was we were what when where which while who whom why will with would
you your yours please also
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


class EvalError(G4Error):
    """A reference or result cannot be read, or nothing pairs up."""


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
        if duration > 0:
            turns.setdefault(fields[1], []).append(Turn(start, start + duration, fields[7]))
    return turns


def parse_stm(text: str, origin: str = "STM") -> dict[str, list[Utterance]]:
    """Utterances per file id. `;;` comments, blank lines and NIST's excluded regions are skipped."""
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
        words = fields[5] if len(fields) > 5 else ""
        if words.startswith("<"):  # the optional <o,f0,male> label
            close = words.find(">")
            if close < 0:
                raise EvalError(f"{where}: the label {words.split()[0]!r} has no closing '>'; {expected}")
            words = words[close + 1:]
        if fields[2].lower() in _STM_SKIP_SPEAKERS:
            continue
        utts.setdefault(fields[0], []).append(Utterance(start, end, fields[2], words.strip()))
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
        text = seg.get("text")
        if text is not None and not isinstance(text, str):
            raise EvalError(f"{where}: text must be a string")
        speaker = seg.get("speaker")
        utts.append(Utterance(start, end, None if speaker is None else str(speaker), text or ""))
    names = {}
    for spk in data.get("speakers") or []:
        if isinstance(spk, dict) and spk.get("id") is not None and spk.get("name"):
            names[str(spk["id"])] = str(spk["name"])
    duration = data.get("duration")
    return utts, names, float(duration) if isinstance(duration, (int, float)) else None


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
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path} is not valid JSON ({exc}); fix or remove it") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path} is not UTF-8 text ({exc})") from exc


def _is_result(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("segments"), list) and isinstance(data.get("source"), dict)


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
            if _is_result(data):
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
        stm_turns = [Turn(u.start, u.end, u.speaker) for u in p.stm or [] if u.end > u.start]
        turns = p.rttm if p.rttm is not None else json_turns or stm_turns or None
        text_source = p.stm if p.stm is not None else (p.json if p.json and any(u.text for u in p.json) else None)
        refs[key] = Reference(
            key=key, turns=tuple(turns) if turns is not None else None,
            utterances=tuple(text_source) if text_source is not None else None,
            names=tuple(p.names.items()), notes=tuple(p.notes) if p.notes is not None else None,
            duration=p.duration, sources=tuple(p.sources))
    return refs


def _claim(parts: dict[str, _Parts], key: str, kind: str, file: Path) -> _Parts:
    """The parts of `key`, refusing a second file that gives the same kind of reference for one recording."""
    p = parts.setdefault(key, _Parts())
    if getattr(p, kind) is not None:
        raise EvalError(f"two references of the same kind for {key!r}: {file} and {', '.join(p.sources)}; "
                        f"keep one of them")
    return p


def load_results(path: Path) -> list[tuple[str, Path, dict]]:
    """(key, path, result) for every result under `path`: a result JSON, or a folder (e.g. a batch output)
    searched recursively for `X.json` files that hold `source` and `segments`; other files are skipped."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path} does not exist; give a result JSON (from transcribe/summarize) or a folder of them")
    if path.is_file():
        data = _read_json(path)
        if not _is_result(data):
            raise EvalError(f"{path} is not a g4media result (no source and segments); give the X.json that "
                            f"`g4media transcribe` or `summarize` wrote")
        return [(path.stem, path, data)]
    found = []
    for file in sorted(path.rglob("*.json")):
        if any(part.startswith(".") for part in file.relative_to(path).parts):
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # not ours
        if _is_result(data):
            found.append(((file.parent.relative_to(path) / file.stem).as_posix(), file, data))
    if not found:
        raise EvalError(f"no results found in {path}; run `g4media transcribe`, `summarize` or `batch` with "
                        f"`-o {path}` first")
    return found


def pair(results: list[tuple[str, Path, dict]], references: dict[str, Reference],
         ) -> tuple[list[tuple[Path, dict, Reference]], list[str], list[str]]:
    """(pairs, results without a reference, references without a result). A result pairs with the reference
    of the same relative path, else of the same name (the JSON's stem, then the recording's stem) if that
    name is unique among the references."""
    by_stem: dict[str, list[Reference]] = {}
    for key, ref in references.items():
        by_stem.setdefault(key.rsplit("/", 1)[-1], []).append(ref)
    pairs, unpaired, used = [], [], set()
    for key, rpath, result in results:
        ref = references.get(key)
        if ref is None:
            source_name = str((result.get("source") or {}).get("name") or "")
            for stem in (key.rsplit("/", 1)[-1], Path(source_name).stem if source_name else ""):
                if stem and len(by_stem.get(stem, [])) == 1:
                    ref = by_stem[stem][0]
                    break
        if ref is None:
            unpaired.append(str(rpath))
        else:
            pairs.append((rpath, result, ref))
            used.add(ref.key)
    missing = [key for key in references if key not in used]
    return pairs, unpaired, missing


# --------------------------------------------------------------------------- text and word errors


@lru_cache(maxsize=2)
def _normalizer(english: bool):
    from transformers.models.whisper.english_normalizer import (
        BasicTextNormalizer,
        EnglishTextNormalizer,
    )

    return EnglishTextNormalizer({}) if english else BasicTextNormalizer()


def is_english(language: str | None) -> bool:
    return language is None or language.strip().lower() in {"", "en", "eng", "english"} \
        or language.strip().lower().startswith(("en-", "en_", "english"))


def normalize_text(text: str, language: str | None = None) -> list[str]:
    """The words scored: Whisper's English text normalizer (the one the Open ASR Leaderboard uses), so that
    case, punctuation, fillers ("uh", "hmm"), contractions and numbers as words or digits ("twenty-one" = "21")
    do not count as errors. For other languages, Whisper's basic normalizer (case, punctuation, symbols)."""
    text = unicodedata.normalize("NFKC", text or "").replace("\u2019", "'")
    return _normalizer(is_english(language))(text).split()


@dataclass(frozen=True)
class WordErrors:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def ref_words(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def rate(self) -> float | None:
        return self.errors / self.ref_words if self.ref_words else None

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.hits + other.hits)

    def to_dict(self) -> dict[str, Any]:
        return {"value": _round(self.rate), "errors": self.errors, "substitutions": self.substitutions,
                "deletions": self.deletions, "insertions": self.insertions, "hits": self.hits,
                "ref_words": self.ref_words}


def word_errors(ref_words: Sequence[str], hyp_words: Sequence[str]) -> WordErrors:
    """Levenshtein alignment of two word lists by jiwer: substitutions, deletions, insertions, hits."""
    if not ref_words:
        return WordErrors(insertions=len(hyp_words))
    if not hyp_words:
        return WordErrors(deletions=len(ref_words))
    import jiwer

    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return WordErrors(out.substitutions, out.deletions, out.insertions, out.hits)


def _ordered(items: Iterable[Utterance]) -> list[Utterance]:
    items = list(items)
    if all(u.start is not None for u in items):
        return sorted(items, key=lambda u: (u.start, u.end))
    return items  # a reference without times: its own order


def wer(reference: Iterable[Utterance], hypothesis: Iterable[Utterance], language: str | None = None) -> WordErrors:
    """WER over the whole recording: every utterance's words in time order, speakers ignored."""
    ref = [w for u in _ordered(reference) for w in normalize_text(u.text, language)]
    hyp = [w for u in _ordered(hypothesis) for w in normalize_text(u.text, language)]
    return word_errors(ref, hyp)


@dataclass(frozen=True)
class CpWer:
    errors: WordErrors  # summed over the speaker pairs (unmatched speakers: all deletions / insertions)
    mapping: tuple[tuple[str, str | None], ...]  # reference speaker -> result speaker (None: unmatched)
    unmatched_result_speakers: tuple[str, ...] = ()

    @property
    def rate(self) -> float | None:
        return self.errors.rate

    def to_dict(self) -> dict[str, Any]:
        return {**self.errors.to_dict(), "mapping": dict(self.mapping),
                "unmatched_result_speakers": list(self.unmatched_result_speakers)}


def cp_wer(reference: Mapping[str, Sequence[str]], hypothesis: Mapping[str, Sequence[str]]) -> CpWer:
    """Concatenated minimum-permutation WER (CHiME-6): each speaker's words concatenated in time order, speakers
    paired one-to-one so that the summed word errors are smallest (Hungarian algorithm on the pairwise jiwer
    error counts), the errors of every pair added, over all reference words. A reference speaker left without
    a partner counts all its words as deletions; a result speaker left over, all its words as insertions."""
    from scipy.optimize import linear_sum_assignment

    refs, hyps = sorted(reference), sorted(hypothesis)
    size = max(len(refs), len(hyps))
    if size == 0:
        return CpWer(WordErrors(), ())
    pair_errors: dict[tuple[int, int], WordErrors] = {}
    cost = [[0] * size for _ in range(size)]
    for i in range(size):
        for j in range(size):
            if i < len(refs) and j < len(hyps):
                pair_errors[i, j] = word_errors(reference[refs[i]], hypothesis[hyps[j]])
                cost[i][j] = pair_errors[i, j].errors
            elif i < len(refs):
                cost[i][j] = len(reference[refs[i]])  # unmatched reference speaker: deletions
            elif j < len(hyps):
                cost[i][j] = len(hypothesis[hyps[j]])  # unmatched result speaker: insertions
    rows, cols = linear_sum_assignment(cost)
    total, mapping, leftover = WordErrors(), [], []
    for i, j in zip(rows, cols):
        if i < len(refs) and j < len(hyps):
            total += pair_errors[i, j]
            mapping.append((refs[i], hyps[j]))
        elif i < len(refs):
            total += WordErrors(deletions=len(reference[refs[i]]))
            mapping.append((refs[i], None))
        elif j < len(hyps):
            total += WordErrors(insertions=len(hypothesis[hyps[j]]))
            leftover.append(hyps[j])
    return CpWer(total, tuple(sorted(mapping)), tuple(sorted(leftover)))


def words_by_speaker(utterances: Iterable[Utterance], language: str | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for u in _ordered(utterances):
        out.setdefault(u.speaker or "?", []).extend(normalize_text(u.text, language))
    return out


# --------------------------------------------------------------------------- speakers


def _annotation(turns: Iterable[Turn]):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for i, t in enumerate(turns):
        if t.end > t.start:
            ann[Segment(t.start, t.end), i] = t.speaker
    return ann


def diarization_errors(reference: Sequence[Turn], hypothesis: Sequence[Turn], duration: float,
                       collar: float = COLLAR) -> dict[str, Any]:
    """DER and JER by pyannote.metrics over 0..duration, overlapped speech scored (skip_overlap=False).

    `collar` is seconds on EACH side of every reference boundary (NIST md-eval `-c`); pyannote's `collar`
    is the collar's total width, so it gets `2 * collar`. Also the optimal (Hungarian) speaker mapping."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    ref, hyp = _annotation(reference), _annotation(hypothesis)
    end = max([duration, *(t.end for t in reference), *(t.end for t in hypothesis)])
    uem = Timeline([Segment(0.0, max(end, 1e-3))])
    der_metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)
    d = der_metric(ref, hyp, uem=uem, detailed=True)
    j = JaccardErrorRate(collar=2 * collar, skip_overlap=False)(ref, hyp, uem=uem, detailed=True)
    mapping = der_metric.optimal_mapping(ref, hyp, uem=uem)  # result speaker -> reference speaker
    return {
        "der": d["diarization error rate"] if d["total"] > 0 else None,
        "confusion": d["confusion"], "missed": d["missed detection"], "false_alarm": d["false alarm"],
        "total": d["total"],
        "jer": j["jaccard error rate"] if j["speaker count"] > 0 else None,
        "jer_speaker_error": j["speaker error"], "jer_speaker_count": j["speaker count"],
        "mapping": {str(k): str(v) for k, v in mapping.items()},
    }


def _same_name(a: str | None, b: str | None) -> bool:
    def norm(s: str) -> str:
        return " ".join(s.replace("_", " ").casefold().split())

    return bool(a) and bool(b) and norm(a) == norm(b)


def naming_accuracy(mapping: Mapping[str, str], reference: Reference, result_names: Mapping[str, str],
                    reference_speakers: Iterable[str]) -> dict[str, Any] | None:
    """Share of named reference speakers whose mapped result speaker (optimal diarization mapping) carries the
    same name (case-insensitive; a default `Speaker N` is wrong). None when the reference names nobody."""
    to_result = {ref: hyp for hyp, ref in mapping.items()}
    named = [(label, reference.name_of(label)) for label in sorted(set(reference_speakers))]
    named = [(label, name) for label, name in named if name]
    if not named:
        return None
    rows = []
    for label, name in named:
        got = result_names.get(to_result.get(label, ""), None)
        ok = _same_name(got, name) and not _DEFAULT_NAME.match(got or "")
        rows.append({"reference": name, "result_speaker": to_result.get(label), "result_name": got, "correct": ok})
    correct = sum(r["correct"] for r in rows)
    return {"value": _round(correct / len(rows)), "correct": correct, "total": len(rows), "speakers": rows}


# --------------------------------------------------------------------------- notes


def content_words(text: str) -> set[str]:
    """Normalized words without stop words, each with a final plural `s` dropped ("tests" = "test")."""
    words = set()
    for w in normalize_text(text):
        w = w.strip("'")
        if not w or w in STOP_WORDS:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        words.add(w)
    return words


def phrase_coverage(reference: str, candidate: str) -> float:
    """Share of the reference phrase's content words that the candidate contains."""
    want = content_words(reference)
    if not want:
        return 1.0 if " ".join(normalize_text(reference)) in " ".join(normalize_text(candidate)) else 0.0
    return len(want & content_words(candidate)) / len(want)


def notes_recall(reference: Sequence[NotesItem], notes: Mapping[str, Any] | None,
                 speaker_names: Mapping[str, str], threshold: float = NOTES_THRESHOLD) -> dict[str, Any] | None:
    """Share of reference decisions / action items found in the result's notes, and owners right.

    A reference item is found if one notes item OF THE SAME KIND contains at least `threshold` of its content
    words (`content_words`); the best-covering item is its match. An action item's owner is right if the
    match's owner (a speaker id, turned into that speaker's name, or a name) equals the reference owner's name
    (case-insensitive), or both have none. Notes that failed count as nothing found; skipped notes: None."""
    if not reference:
        return None
    status = (notes or {}).get("status", "ok" if notes else "skipped")
    if status == "skipped":
        return {"status": "skipped", "value": None, "found": 0, "total": len(reference), "owners_right": 0,
                "owners_total": 0, "items": []}
    keys = {"decision": "decisions", "action_item": "action_items"}
    rows, found, owners_right, owners_total = [], 0, 0, 0
    for item in reference:
        candidates = (notes or {}).get(keys[item.kind]) or [] if status == "ok" else []
        best, best_cov = None, 0.0
        for cand in candidates:
            text = cand if isinstance(cand, str) else (cand or {}).get("text") or ""
            cov = phrase_coverage(item.text, text)
            if cov > best_cov:
                best, best_cov = cand, cov
        ok = best is not None and best_cov >= threshold
        row: dict[str, Any] = {"kind": item.kind, "text": item.text, "found": ok, "coverage": _round(best_cov),
                               "match": (best if isinstance(best, str) else (best or {}).get("text")) if ok else None}
        found += ok
        if item.kind == "action_item":
            row["owner"] = item.owner
            if ok:
                raw = None if isinstance(best, str) else best.get("owner")
                got = speaker_names.get(str(raw), str(raw)) if raw else None
                right = (got is None and item.owner is None) or (
                    _same_name(got, item.owner) and not _DEFAULT_NAME.match(got or ""))
                row.update(result_owner=got, owner_right=right)
                owners_total += 1
                owners_right += right
        rows.append(row)
    return {"status": status, "value": _round(found / len(reference)), "found": found, "total": len(reference),
            "decisions": _count(rows, "decision"), "action_items": _count(rows, "action_item"),
            "owners_right": owners_right, "owners_total": owners_total, "items": rows}


def _count(rows: list[dict], kind: str) -> dict[str, int]:
    mine = [r for r in rows if r["kind"] == kind]
    return {"found": sum(r["found"] for r in mine), "total": len(mine)}


# --------------------------------------------------------------------------- one recording, many


def speed(result: Mapping[str, Any]) -> dict[str, Any]:
    """Wall time per stage (the result's own `timings`) and real-time factor = total / recording duration."""
    timings = {k: float(v) for k, v in (result.get("timings") or {}).items() if isinstance(v, (int, float))}
    duration = float((result.get("source") or {}).get("duration") or 0.0)
    total = timings.get("total")
    return {"timings": timings, "duration": duration,
            "rtf": _round(total / duration, 4) if total is not None and duration > 0 else None}


def _result_utterances(result: Mapping[str, Any]) -> list[Utterance]:
    out = []
    for seg in result.get("segments") or []:
        try:
            start, end = float(seg["start"]), float(seg["end"])
        except (KeyError, TypeError, ValueError):
            raise EvalError(f"a segment of result {_result_name(result)} has no numeric start and end") from None
        speaker = seg.get("speaker")
        out.append(Utterance(start, end, None if speaker is None else str(speaker), str(seg.get("text") or "")))
    return out


def _result_name(result: Mapping[str, Any]) -> str:
    source = result.get("source") or {}
    return str(source.get("name") or Path(str(source.get("path") or "?")).name)


def evaluate_recording(result: Mapping[str, Any], reference: Reference, collar: float = COLLAR,
                       notes_threshold: float = NOTES_THRESHOLD) -> dict[str, Any]:
    """Every metric for one result and its reference; a metric its reference cannot give is None."""
    language = ((result.get("options") or {}).get("plan") or {}).get("language")
    hyp = _result_utterances(result)
    names = {str(s.get("id")): str(s.get("name") or "") for s in result.get("speakers") or [] if isinstance(s, dict)}
    spd = speed(result)
    out: dict[str, Any] = {"recording": _result_name(result), "reference": reference.key,
                           "reference_files": list(reference.sources), "duration": spd["duration"],
                           "normalizer": "english" if is_english(language) else "basic"}
    if reference.utterances is not None:
        out["wer"] = wer(reference.utterances, hyp, language).to_dict()
        if all(u.speaker is not None for u in reference.utterances):
            out["cpwer"] = cp_wer(words_by_speaker(reference.utterances, language),
                                  words_by_speaker(hyp, language)).to_dict()
        else:
            out["cpwer"] = None
    else:
        out["wer"] = out["cpwer"] = None
    ref_speakers = sorted({t.speaker for t in reference.turns or ()} or
                          {u.speaker for u in reference.utterances or () if u.speaker is not None})
    result_speakers = len(names) if names else len({u.speaker for u in hyp})
    out["speakers"] = {"reference": len(ref_speakers) if ref_speakers else None, "result": result_speakers,
                       "error": result_speakers - len(ref_speakers) if ref_speakers else None}
    if reference.turns is not None:
        hyp_turns = [Turn(u.start, u.end, u.speaker or "?") for u in hyp]
        duration = spd["duration"] or reference.duration or 0.0
        d = diarization_errors(reference.turns, hyp_turns, duration, collar)
        out["der"] = {"value": _round(d["der"]),
                      **{k: _round(d[k]) for k in ("confusion", "missed", "false_alarm", "total")}}
        out["jer"] = {"value": _round(d["jer"]), "speaker_error": _round(d["jer_speaker_error"]),
                      "speaker_count": d["jer_speaker_count"]}
        out["mapping"] = d["mapping"]
        out["naming"] = naming_accuracy(d["mapping"], reference, names, ref_speakers)
    else:
        out["der"] = out["jer"] = out["mapping"] = out["naming"] = None
    out["notes"] = notes_recall(reference.notes, result.get("notes"), names, notes_threshold) \
        if reference.notes else None
    out["speed"] = spd
    return out


def evaluate(results: Path, references: Path, collar: float = COLLAR,
             notes_threshold: float = NOTES_THRESHOLD) -> dict[str, Any]:
    """Pair the results under `results` with the references under `references` and score each pair."""
    if collar < 0:
        raise EvalError(f"the collar must not be negative (got {collar})")
    results, references = Path(results), Path(references)
    found, refs = load_results(results), load_references(references)
    if results.is_file() and references.is_file() and len(refs) == 1:  # both named by hand: they belong together
        pairs, unpaired, missing = [(found[0][1], found[0][2], next(iter(refs.values())))], [], []
    else:
        pairs, unpaired, missing = pair(found, refs)
    if not pairs:
        raise EvalError(f"no result in {results} has a reference in {references}: references pair with results "
                        f"by name (X.json <-> X.rttm, X.stm, X.truth.json, X.notes.json); rename them to match")
    recordings = [evaluate_recording(result, ref, collar, notes_threshold) | {"result_file": str(rpath)}
                  for rpath, result, ref in pairs]
    return {"collar": collar, "notes_threshold": notes_threshold, "normalization": NORMALIZATION,
            "recordings": recordings, "overall": overall(recordings),
            "results_without_reference": unpaired, "references_without_result": missing}


def overall(recordings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled over recordings: error counts and durations are summed before dividing (not an average of rates)."""

    def pooled(key: str, num: str, den: str) -> dict[str, Any]:
        rows = [r[key] for r in recordings if r.get(key)]
        n, d = sum(x[num] for x in rows), sum(x[den] for x in rows)
        return {"value": _round(n / d) if d else None, num: _tidy(n), den: _tidy(d), "recordings": len(rows)}

    spk = [r["speakers"] for r in recordings if r["speakers"]["error"] is not None]
    notes = [r["notes"] for r in recordings if r.get("notes") and r["notes"]["value"] is not None]
    timings: dict[str, float] = {}
    for r in recordings:
        for k, v in r["speed"]["timings"].items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    duration = sum(r["speed"]["duration"] for r in recordings)
    found, total = sum(n["found"] for n in notes), sum(n["total"] for n in notes)
    return {
        "recordings": len(recordings), "duration": round(duration, 3),
        "wer": pooled("wer", "errors", "ref_words"), "cpwer": pooled("cpwer", "errors", "ref_words"),
        "der": _pooled_der(recordings),
        "jer": pooled("jer", "speaker_error", "speaker_count"),
        "speakers": {"right": sum(s["error"] == 0 for s in spk), "recordings": len(spk),
                     "mean_abs_error": _round(sum(abs(s["error"]) for s in spk) / len(spk)) if spk else None},
        "naming": pooled("naming", "correct", "total"),
        "notes": {"value": _round(found / total) if total else None, "found": found, "total": total,
                  "owners_right": sum(n["owners_right"] for n in notes),
                  "owners_total": sum(n["owners_total"] for n in notes)},
        "speed": {"timings": timings, "rtf": _round(timings["total"] / duration, 4)
                  if "total" in timings and duration > 0 else None},
    }


def _pooled_der(recordings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    rows = [r["der"] for r in recordings if r.get("der")]
    sums = {k: sum(x[k] for x in rows) for k in ("confusion", "missed", "false_alarm", "total")}
    value = (sums["confusion"] + sums["missed"] + sums["false_alarm"]) / sums["total"] if sums["total"] else None
    return {"value": _round(value), **{k: _round(v) for k, v in sums.items()}, "recordings": len(rows)}


def _tidy(x: float) -> float | int:
    return x if isinstance(x, int) else round(float(x), 4)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# --------------------------------------------------------------------------- the table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _frac(a: int | None, b: int | None) -> str:
    return "-" if not b else f"{a}/{b}"


def format_table(report: Mapping[str, Any]) -> str:
    """The report as text: one row per recording and an overall row, then the time per stage."""
    head = ["recording", "dur s", "WER", "cpWER", "DER", "JER", "speakers", "names", "notes", "owners", "RTF"]
    rows = []
    for r in report["recordings"]:
        spk = r["speakers"]
        notes = r.get("notes")
        notes_cell = "-" if not notes else (
            "skipped" if notes["value"] is None else _frac(notes["found"], notes["total"]))
        rows.append([
            r["recording"], f"{r['duration']:.1f}", _pct((r["wer"] or {}).get("value")),
            _pct((r["cpwer"] or {}).get("value")), _pct((r["der"] or {}).get("value")),
            _pct((r["jer"] or {}).get("value")),
            "-" if spk["reference"] is None else f"{spk['result']}/{spk['reference']} ({spk['error']:+d})",
            "-" if not r.get("naming") else _frac(r["naming"]["correct"], r["naming"]["total"]),
            notes_cell, "-" if not notes else _frac(notes["owners_right"], notes["owners_total"]),
            "-" if r["speed"]["rtf"] is None else f"{r['speed']['rtf']:.2f}",
        ])
    o = report["overall"]
    rows.append([
        f"overall ({o['recordings']})", f"{o['duration']:.1f}", _pct(o["wer"]["value"]), _pct(o["cpwer"]["value"]),
        _pct(o["der"]["value"]), _pct(o["jer"]["value"]),
        f"{o['speakers']['right']}/{o['speakers']['recordings']} right" if o["speakers"]["recordings"] else "-",
        _frac(o["naming"]["correct"], o["naming"]["total"]), _frac(o["notes"]["found"], o["notes"]["total"]),
        _frac(o["notes"]["owners_right"], o["notes"]["owners_total"]),
        "-" if o["speed"]["rtf"] is None else f"{o['speed']['rtf']:.2f}",
    ])
    lines = _grid(head, rows)
    stages = [s for s in STAGES if any(s in r["speed"]["timings"] for r in report["recordings"])]
    stages += sorted({k for r in report["recordings"] for k in r["speed"]["timings"]} - set(stages))
    if stages:
        srows = [[r["recording"], *(_secs(r["speed"]["timings"].get(s)) for s in stages)]
                 for r in report["recordings"]]
        srows.append(["overall", *(_secs(o["speed"]["timings"].get(s)) for s in stages)])
        lines += ["", "wall time per stage (s):", *_grid(["recording", *stages], srows)]
    lines += ["", (f"DER/JER: collar {report['collar']:g} s on each side of reference boundaries, overlap scored. "
                   "WER/cpWER: text normalized by Whisper's normalizer."),
              (f"speakers: result/reference (difference). notes: reference items found (>= "
               f"{report['notes_threshold']:.0%} of content words); owners: right of found action items.")]
    for label, items in (("results without a reference", report["results_without_reference"]),
                         ("references without a result", report["references_without_result"])):
        if items:
            lines.append(f"{label}: {', '.join(items)}")
    return "\n".join(lines)


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[:-1]]
    return out + ["  ".join("-" * w for w in widths), line(rows[-1])]
