"""Score diarization against ground truth with pyannote.metrics' DER and print a table.

    python benchmarks/eval_diarization.py                    # the recordings in samples/
    python benchmarks/eval_diarization.py DIR_OR_FILE ...    # any recordings with <name>.truth.json (or .rttm) beside
    python benchmarks/eval_diarization.py --json results.json --speakers-known samples/

DER is scored over the whole recording (UEM 0..duration), overlap included, two ways: with no collar,
and with the field's usual collar of 0.25 s on each side of every reference boundary (NIST md-eval
`-c 0.25`, which is pyannote's `collar=0.5`, a total width). The table also shows the speaker count
of the truth and the count found, the short turns (under 1.5 s: "Okay.", "Yes, I can.") that went to their
speaker (over half their time, under the optimal mapping of found speakers to true ones), and the time each file
took. `--set piece_margin=99` runs with a diarization option changed (any field of `DiarizationOptions`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEDIA_SUFFIXES = {".wav", ".mp3", ".mp4", ".m4a", ".flac", ".ogg", ".opus", ".mkv", ".webm", ".mov", ".aac"}
ROOT = Path(__file__).resolve().parents[1]


def truth_path(media: Path) -> Path:
    """`<name>.truth.json` beside a recording, else `<name>.rttm` (another tool's reference, e.g. pyannote's sample)."""
    truth, rttm = media.with_name(media.stem + ".truth.json"), media.with_name(media.stem + ".rttm")
    return rttm if rttm.is_file() and not truth.is_file() else truth


def truth_turns(path: Path) -> list[tuple[float, float, str]]:
    """(start, end, speaker) of every turn in a truth JSON's segments or an RTTM's SPEAKER lines."""
    if path.suffix == ".rttm":
        from mediapipe_g4.references import parse_rttm

        return [(t.start, t.end, t.speaker) for turns in parse_rttm(path.read_text(), path.name).values()
                for t in turns]
    return [(float(s["start"]), float(s["end"]), s["speaker"]) for s in json.loads(path.read_text())["segments"]]


def find_recordings(targets: list[Path]) -> list[Path]:
    found: list[Path] = []
    for t in targets:
        if t.is_dir():
            found += sorted(p for p in t.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES and truth_path(p).is_file())
        elif t.is_file():
            found.append(t)
        else:
            raise SystemExit(f"eval_diarization: {t} does not exist")
    return found


def annotation_from_truth(turns: list[tuple[float, float, str]], uri: str):
    from pyannote.core import Annotation, Segment

    ref = Annotation(uri=uri)
    for i, (start, end, speaker) in enumerate(turns):
        ref[Segment(start, end), i] = speaker
    return ref


def annotation_from_diarization(diarization, uri: str):
    from pyannote.core import Annotation, Segment

    hyp = Annotation(uri=uri)
    for i, t in enumerate(diarization.turns):
        hyp[Segment(t.start, t.end), i] = t.speaker
    return hyp


def score(reference, hypothesis, duration: float) -> dict[str, float]:
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    uem = Timeline([Segment(0.0, duration)])
    out = {}
    for name, collar in (("der", 0.0), ("der_c025", 0.5)):
        metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
        detail = metric(reference, hypothesis, uem=uem, detailed=True)
        out[name] = float(detail["diarization error rate"])
        if collar == 0.0:
            total = detail["total"] or 1.0
            out["miss"] = detail["missed detection"] / total
            out["fa"] = detail["false alarm"] / total
            out["conf"] = detail["confusion"] / total
    return out


SHORT_TURN = 1.5  # seconds


def short_turns_right(truth: list[tuple[float, float, str]], reference, hypothesis) -> tuple[int, int]:
    """(right, all) of the true turns under SHORT_TURN seconds: right where over half of one goes to its speaker."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    mapping = DiarizationErrorRate().optimal_mapping(reference, hypothesis)  # found label -> true label
    short = [(s, e, who) for s, e, who in truth if e - s < SHORT_TURN]
    right = 0
    for s, e, who in short:
        mine = sum(max(0.0, min(e, seg.end) - max(s, seg.start))
                   for seg, _, label in hypothesis.itertracks(yield_label=True) if mapping.get(label) == who)
        right += mine > (e - s) / 2
    return right, len(short)


def evaluate(media: Path, *, known_count: bool = False, sides: str = "auto", changes: dict | None = None) -> dict:
    """Speaker turns as the product finds them (`sides.find_speakers`: a recording whose channels carry their own
    voices is diarized side by side, unless `sides` is "mix")."""
    from mediapipe_g4 import media as m
    from mediapipe_g4.diarize import DiarizationOptions
    from mediapipe_g4.sides import find_speakers

    truth = truth_turns(truth_path(media))
    n_true = len({speaker for _, _, speaker in truth})
    options = DiarizationOptions(**{"num_speakers": n_true if known_count else None, "sides": sides, **(changes or {})})
    with tempfile.TemporaryDirectory(prefix="g4eval-") as work:
        info = m.probe(media)
        waveform = m.decode_audio(media, work, info=info)
        t0 = time.perf_counter()  # the sides' decoding counts: the product does it to judge them
        open_sides = (lambda: m.decode_sides(media, work, info=info)) if m.side_count(info) > 1 else None
        result = find_speakers(waveform, options, open_sides)
        elapsed = time.perf_counter() - t0
        duration = len(waveform) / 16000
        del waveform
    uri = media.stem
    reference, hypothesis = annotation_from_truth(truth, uri), annotation_from_diarization(result, uri)
    scores = score(reference, hypothesis, duration)
    short_right, short = short_turns_right(truth, reference, hypothesis)
    return {
        "file": str(media),
        "duration": round(duration, 2),
        "speakers_true": n_true,
        "speakers_found": len(result.speakers),
        "seconds": round(elapsed, 2),
        "short_turns": short,
        "short_turns_right": short_right,
        **{k: round(v, 4) for k, v in scores.items()},
    }


def print_table(rows: list[dict]) -> None:
    head = f"{'recording':<28} {'dur s':>6} {'spk true':>8} {'found':>5} {'DER':>7} {'DER c.25':>8} " \
           f"{'miss':>6} {'FA':>6} {'conf':>6} {'short':>6} {'time s':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mark = "" if r["speakers_true"] == r["speakers_found"] else "  <- count"
        print(f"{Path(r['file']).name:<28} {r['duration']:>6.1f} {r['speakers_true']:>8} {r['speakers_found']:>5} "
              f"{100 * r['der']:>6.2f}% {100 * r['der_c025']:>7.2f}% {100 * r['miss']:>5.1f}% {100 * r['fa']:>5.1f}% "
              f"{100 * r['conf']:>5.1f}% {r['short_turns_right']:>3}/{r['short_turns']:<2} {r['seconds']:>6.2f}{mark}")
    if rows:
        total = sum(r["duration"] for r in rows)
        der = sum(r["der"] * r["duration"] for r in rows) / total
        der_c = sum(r["der_c025"] * r["duration"] for r in rows) / total
        exact = sum(r["speakers_true"] == r["speakers_found"] for r in rows)
        short = f"{sum(r['short_turns_right'] for r in rows)}/{sum(r['short_turns'] for r in rows)}"
        print("-" * len(head))
        print(f"{'all (duration-weighted)':<28} {total:>6.0f} {'':>8} {'':>5} {100 * der:>6.2f}% {100 * der_c:>7.2f}%"
              f"   count exact on {exact}/{len(rows)}; short turns right {short}; "
              f"worst DER {100 * max(r['der'] for r in rows):.2f}%")


def diarization_fields() -> set[str]:
    """The `DiarizationOptions` fields that --set may change (the count and sides have options of their own)."""
    from mediapipe_g4.diarize import DiarizationOptions

    return set(DiarizationOptions.__dataclass_fields__) - {"num_speakers", "sides", "vad"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score g4media diarization against <name>.truth.json files.")
    ap.add_argument("targets", nargs="*", type=Path, help="recordings or folders (default: samples/)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--speakers-known", action="store_true", help="give diarize the true speaker count")
    ap.add_argument("--sides", choices=["auto", "split", "mix"], default="auto",
                    help="stereo calls: split by channel when each carries its own voices (auto, as g4media does), "
                         "always, or never")
    ap.add_argument("--set", dest="changes", action="append", default=[], metavar="NAME=VALUE",
                    help="run with this diarization option changed, e.g. piece_margin=99 (a JSON value); repeatable")
    args = ap.parse_args(argv)
    changes, fields = {}, diarization_fields()
    for item in args.changes:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            ap.error(f"--set {item}: expected NAME=VALUE with NAME one of {', '.join(sorted(fields))}")
        try:
            changes[name] = json.loads(value)
        except json.JSONDecodeError:
            changes[name] = value
    recordings = find_recordings(args.targets or [ROOT / "samples"])
    if not recordings:
        print("eval_diarization: no recordings with a .truth.json beside them", file=sys.stderr)
        return 1
    rows = [evaluate(m, known_count=args.speakers_known, sides=args.sides, changes=changes) for m in recordings]
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
