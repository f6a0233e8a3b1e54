"""Score results (`X.json`) against references: WER, cpWER, DER/JER, speaker counts, naming, notes recall, speed.

References are read and paired in `references`; each metric's rule is in its function's docstring in `metrics`
and in the README ("Evaluating on your own recordings").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import EvalError
from .metrics import (
    COLLAR,
    NORMALIZATION,
    NOTES_THRESHOLD,
    cp_wer,
    diarization_errors,
    is_default_name,
    is_english,
    naming_accuracy,
    notes_recall,
    rounded,
    wer,
    words_by_speaker,
)
from .records import STAGES
from .references import Reference, Turn, Utterance, load_references, load_results, pair
from .result_fields import recording_duration

log = logging.getLogger("mediapipe_g4")

# --------------------------------------------------------------------------- one recording, many


def speed(result: Mapping[str, Any]) -> dict[str, Any]:
    """Wall time per stage (the result's own `timings`) and real-time factor = total / recording duration."""
    timings = {k: float(v) for k, v in (result.get("timings") or {}).items() if isinstance(v, (int, float))}
    duration = float((result.get("source") or {}).get("duration") or 0.0)
    total = timings.get("total")
    return {"timings": timings, "duration": duration,
            "rtf": rounded(total / duration, 4) if total is not None and duration > 0 else None}


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


def _scored(hyp: Sequence[Utterance], excluded: Sequence[tuple[float, float]]) -> list[Utterance]:
    """The result's words outside the reference's excluded stretches: words the reference does not hold there are
    not errors. sclite decides by each word's time; a segment's words are taken as spread evenly over it (a whole
    minute's segment was kept or dropped by its middle)."""
    def outside(t: float) -> bool:
        return not any(a <= t < b for a, b in excluded)

    kept = []
    for u in hyp:
        if not any(u.start < b and u.end > a for a, b in excluded):
            kept.append(u)
            continue
        words = u.text.split()
        span = u.end - u.start
        said = [w for i, w in enumerate(words) if outside(u.start + span * (i + 0.5) / len(words))]
        if said:
            kept.append(Utterance(u.start, u.end, u.speaker, " ".join(said)))
    return kept


def _result_name(result: Mapping[str, Any]) -> str:
    source = result.get("source") or {}
    return str(source.get("name") or Path(str(source.get("path") or "?")).name)


def evaluate_recording(result: Mapping[str, Any], reference: Reference, collar: float = COLLAR,
                       notes_threshold: float = NOTES_THRESHOLD) -> dict[str, Any]:
    """Every metric for one result and its reference; a metric its reference cannot give is None."""
    plan = (result.get("options") or {}).get("plan") or {}
    language = plan.get("translate_to") or plan.get("language")  # the transcript's language
    hyp = _result_utterances(result)
    names = {str(s.get("id")): str(s.get("name") or "") for s in result.get("speakers") or [] if isinstance(s, dict)}
    spd = speed(result)
    out: dict[str, Any] = {"recording": _result_name(result), "reference": reference.key,
                           "reference_files": list(reference.sources),
                           # Two RTTMs say no duration: then up to the last speech either one holds.
                           "duration": spd["duration"] or reference.duration or recording_duration(result)
                           or max([u.end for u in hyp] + [t.end for t in reference.turns or ()]
                                  + [u.end for u in reference.utterances or ()], default=0.0),
                           "normalizer": "english" if is_english(language) else "basic"}
    words = not result.get("diarization_only")  # an RTTM or diarize output has no words to score
    if reference.utterances is not None and words:
        said = _scored(hyp, reference.excluded)
        out["wer"] = wer(reference.utterances, said, language).to_dict()
        if all(u.speaker is not None for u in reference.utterances):
            out["cpwer"] = cp_wer(words_by_speaker(reference.utterances, language),
                                  words_by_speaker(said, language)).to_dict()
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
        out["der"] = {"value": rounded(d["der"]),
                      **{k: rounded(d[k]) for k in ("confusion", "missed", "false_alarm", "total")}}
        out["jer"] = {"value": rounded(d["jer"]), "speaker_error": rounded(d["jer_speaker_error"]),
                      "speaker_count": d["jer_speaker_count"]}
        out["mapping"] = d["mapping"]
        out["naming"] = naming_accuracy(d["mapping"], reference, names, ref_speakers) if words else None
        # `transcribe` names no one: its default names are no naming failures (a name typed into X.json is scored)
        unnamed = all(is_default_name(n) for n in names.values())
        if out["naming"] and (result.get("options") or {}).get("summarize") is False and unnamed:
            out["naming"] = {"status": "skipped", "value": None, "correct": 0, "total": 0, "speakers": []}
    else:
        out["der"] = out["jer"] = out["mapping"] = out["naming"] = None
    out["notes"] = notes_recall(reference.notes, result.get("notes"), names, notes_threshold) \
        if reference.notes and words else None
    out["speed"] = spd
    return out


def evaluate(results: Path, references: Path, collar: float = COLLAR,
             notes_threshold: float = NOTES_THRESHOLD) -> dict[str, Any]:
    """Pair the results under `results` with the references under `references` and score each pair."""
    if collar < 0:
        raise EvalError(f"the collar must not be negative (got {collar})")
    results, references = Path(results), Path(references)
    found, refs = load_results(results), load_references(references)
    sources = {Path(source).resolve() for ref in refs.values() for source in ref.sources}
    scored_as_both = sorted({str(rpath) for _, rpath, _ in found if rpath.resolve() in sources})
    if scored_as_both:  # an RTTM found among the results is also read as a reference: it would score 0 % against itself
        raise EvalError(f"{scored_as_both[0]} is a reference as well as a result; give the results and the "
                        f"references as two different files or folders")
    if results.is_file() and references.is_file() and len(found) == len(refs) == 1:  # both named by hand: a pair
        pairs, unpaired, missing = [(found[0][1], found[0][2], next(iter(refs.values())))], [], []
        _warn_if_apart(*pairs[0])
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


def _warn_if_apart(result_path: Path, result: Mapping[str, Any], reference: Reference) -> None:
    """Say so when a reference paired by hand speaks past the end of the recording: another recording's, most
    likely, and every score would be meaningless."""
    ends = [t.end for t in reference.turns or ()] + [u.end for u in reference.utterances or () if u.end is not None]
    duration = recording_duration(result)
    if ends and duration and max(ends) > duration * 1.05 + 2.0:
        log.warning("%s has speech until %.0f s but %s is %.0f s long: is it the reference of another recording?",
                    ", ".join(reference.sources) or "the reference", max(ends), result_path.name, duration)


def overall(recordings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled over recordings: error counts and durations are summed before dividing (not an average of rates)."""

    def pooled(key: str, num: str, den: str) -> dict[str, Any]:
        rows = [r[key] for r in recordings if r.get(key) and r[key].get("status") != "skipped"]
        n, d = sum(x[num] for x in rows), sum(x[den] for x in rows)
        return {"value": rounded(n / d) if d else None, num: _tidy(n), den: _tidy(d), "recordings": len(rows)}

    spk = [r["speakers"] for r in recordings if r["speakers"]["error"] is not None]
    notes = [r["notes"] for r in recordings if r.get("notes") and r["notes"]["value"] is not None]
    timings: dict[str, float] = {}
    for r in recordings:
        for k, v in r["speed"]["timings"].items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    duration = sum(r["duration"] or 0.0 for r in recordings)
    # RTF's part: the recordings with both a total time and a duration (a total without a duration counted in
    # the sum of times but added nothing to the time they were run for)
    with_rtf = [r["speed"] for r in recordings if r["speed"]["rtf"] is not None]
    timed = sum(s["duration"] for s in with_rtf)
    rtf_total = sum(s["timings"]["total"] for s in with_rtf)
    found, total = sum(n["found"] for n in notes), sum(n["total"] for n in notes)
    return {
        "recordings": len(recordings), "duration": round(duration, 3),
        "wer": pooled("wer", "errors", "ref_words"), "cpwer": pooled("cpwer", "errors", "ref_words"),
        "der": _pooled_der(recordings),
        "jer": pooled("jer", "speaker_error", "speaker_count"),
        "speakers": {"right": sum(s["error"] == 0 for s in spk), "recordings": len(spk),
                     "mean_abs_error": rounded(sum(abs(s["error"]) for s in spk) / len(spk)) if spk else None},
        "naming": pooled("naming", "correct", "total"),
        "notes": {"value": rounded(found / total) if total else None, "found": found, "total": total,
                  "owners_right": sum(n["owners_right"] for n in notes),
                  "owners_total": sum(n["owners_total"] for n in notes)},
        "speed": {"timings": timings, "rtf": rounded(rtf_total / timed, 4) if timed > 0 else None},
    }


def _pooled_der(recordings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    rows = [r["der"] for r in recordings if r.get("der")]
    sums = {k: sum(x[k] for x in rows) for k in ("confusion", "missed", "false_alarm", "total")}
    value = (sums["confusion"] + sums["missed"] + sums["false_alarm"]) / sums["total"] if sums["total"] else None
    return {"value": rounded(value), **{k: rounded(v) for k, v in sums.items()}, "recordings": len(rows)}


def _tidy(x: float) -> float | int:
    return x if isinstance(x, int) else round(float(x), 4)


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
            "-" if not r.get("naming") else "skipped" if r["naming"].get("status") == "skipped"
            else _frac(r["naming"]["correct"], r["naming"]["total"]),
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
