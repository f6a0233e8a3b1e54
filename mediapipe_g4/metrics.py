"""The metrics of `g4media eval`: WER and cpWER (jiwer, Whisper's text normalizer), DER and JER
(pyannote.metrics), speaker naming and notes recall. Each function's docstring states its rule."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .references import NotesItem, Reference, Turn, Utterance

COLLAR = 0.25  # seconds on EACH side of every reference boundary, as NIST md-eval `-c 0.25`
NOTES_THRESHOLD = 0.6  # share of a reference phrase's content words a notes item must contain
NORMALIZATION = ("Whisper's EnglishTextNormalizer (lower case, punctuation and fillers removed, contractions "
                 "expanded, numbers written as digits, British and American spellings not unified); "
                 "BasicTextNormalizer for a result whose --language (or --translate-to) is not English; Chinese, "
                 "Japanese, Thai, Lao, Khmer and Burmese scored by character")
_DEFAULT_NAME = re.compile(r"^speaker[\s_-]*\d+$", re.IGNORECASE)


def is_default_name(name: str | None) -> bool:
    """Whether a speaker's name is none, or the `Speaker N` one given when nothing named them."""
    return not name or bool(_DEFAULT_NAME.match(name))


_STOP_WORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just let me more most my no nor not of off on once only or other
our ours out over own same she should so some such than that the their them then there these they this those
through to too under until up us very was we were what when where which while who whom why will with would
you your yours please also
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


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
    return _UNSPACED_OR_WORD.findall(_normalizer(is_english(language))(text))


# Scripts written without spaces between words (Chinese, Japanese kana, Thai, Lao, Khmer, Burmese): each character
# is a word of its own, so their WER is a character error rate (a mixed error rate in code-switched speech);
# a clause between punctuation marks counted as one word, and one wrong character made it all wrong.
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f"
_UNSPACED_OR_WORD = re.compile(rf"[{_UNSPACED}]|[^\s{_UNSPACED}]+")


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
        return {"value": rounded(self.rate), "errors": self.errors, "substitutions": self.substitutions,
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

    # One speaker's overlapping or touching turns as one stretch, as NIST md-eval scores them: pyannote counted
    # their overlap twice (a perfect result scored 5.6 % against a reference split into sentences) and put a
    # collar at every seam between them.
    ref, hyp = _annotation(reference).support(), _annotation(hypothesis).support()
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
        ok = _same_name(got, name) and not is_default_name(got)
        rows.append({"reference": name, "result_speaker": to_result.get(label), "result_name": got, "correct": ok})
    correct = sum(r["correct"] for r in rows)
    return {"value": rounded(correct / len(rows)), "correct": correct, "total": len(rows), "speakers": rows}


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
        row: dict[str, Any] = {"kind": item.kind, "text": item.text, "found": ok, "coverage": rounded(best_cov),
                               "match": (best if isinstance(best, str) else (best or {}).get("text")) if ok else None}
        found += ok
        if item.kind == "action_item":
            row["owner"] = item.owner
            if ok:
                raw = None if isinstance(best, str) else best.get("owner")
                got = speaker_names.get(str(raw), str(raw)) if raw else None
                right = (got is None and item.owner is None) or (
                    _same_name(got, item.owner) and not is_default_name(got))
                row.update(result_owner=got, owner_right=right)
                owners_total += 1
                owners_right += right
        rows.append(row)
    return {"status": status, "value": rounded(found / len(reference)), "found": found, "total": len(reference),
            "decisions": _count(rows, "decision"), "action_items": _count(rows, "action_item"),
            "owners_right": owners_right, "owners_total": owners_total, "items": rows}


def _count(rows: list[dict], kind: str) -> dict[str, int]:
    mine = [r for r in rows if r["kind"] == kind]
    return {"found": sum(r["found"] for r in mine), "total": len(mine)}


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)
