"""Issue 7's targets against the figures of `gpu_throughput.py --json` runs: one line a target, met or missed.

    python benchmarks/gpu_summary.py static.json long.json dynamic.json

Files that are missing (a part skipped or stopped before its first figure) are said and left out; a figure that
did not run says why (e.g. "out of memory: ...").
"""

from __future__ import annotations

import json
import operator
import sys
from pathlib import Path
from typing import Any

# (what, figure name(s): the best of them counts, target, how it is met). The targets are for a 30-minute meeting
# ("{m}": the run's minutes); "{n}" is the batch the run used.
TARGETS = [
    ("transcription of the {m}-min meeting, warm (s)", ["transcribe_wall_s_static"], 10.0, operator.le),
    ("whole pipeline, {m}-min meeting, warm (s)", ["pipeline_wall_s_static"], 30.0, operator.le),
    ("end to end, x real time", ["pipeline_speed_x_static"], 60.0, operator.ge),
    ("decode at batch 1 (ms/step)", ["decode_ms_per_step_batch1_static"], 12.0, operator.le),
    ("128 k-token notes prefill (s)", ["long_prefill_131072_s_flex", "long_prefill_131072_s_lower-right",
                                       "long_prefill_131072_s"], None, None),
    ("256 k-token notes prefill (s)", ["long_prefill_262144_s_flex", "long_prefill_262144_s_lower-right",
                                       "long_prefill_262144_s"], 60.0, operator.le),
]
# Shown beside the targets: what they are made of, and transformers' defaults on the same machine ("before").
CONTEXT = [
    ("transcription, first run with compiling (s)", "transcribe_first_s_static"),
    ("transcription, transformers' default decoding (s)", "transcribe_wall_s_dynamic"),
    ("decode at batch 1, default decoding (ms/step)", "decode_ms_per_step_batch1_dynamic"),
    ("decode at batch {n}, static / default (ms/step)", "decode_ms_per_step_batch{n}_static"),
    ("", "decode_ms_per_step_batch{n}_dynamic"),
    ("decode with the notes' cache (ms/step)", "decode_ms_per_step_notes_static"),
    ("prefill at batch {n} (tokens/s)", "prefill_tokens_per_s_batch{n}"),
    ("names / notes, warm (s)", "names_wall_s_static"),
    ("", "notes_wall_s_static"),
    ("diarization on the CPU (s)", "diarize_s"),
    ("graph breaks / steps without CUDA graphs", "compile_graph_breaks_static"),
    ("", "cudagraph_skips_static"),
    ("MTP drafter: one draft step / overhead a token (ms)", "drafter_step_ms"),
    ("", "drafter_overhead_ms_per_token"),
    ("peak GPU memory (GB)", "peak_gb"),
]


def load(paths: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The runs' info and figures merged (a later file's figure wins), and the files that could not be read."""
    info: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    missing = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            missing.append(f"{path} ({type(exc).__name__})")
            continue
        info.update(data.get("info") or {})
        figures.update(data.get("figures") or {})
    return info, figures, missing


def show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.3g}"
    return "-" if value is None else str(value)


def summary(info: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    n, m = info.get("batch_size", "N"), show(info.get("minutes"))
    lines = [f"{'target':<52} {'measured':>10}  {'goal':>8}  verdict"]
    for what, names, goal, met in TARGETS:
        what = what.format(m=m)
        found = [(name, figures[name]) for name in names if name in figures]
        numbers = [(v, name) for name, v in found if isinstance(v, (int, float))]
        if numbers:
            value, name = min(numbers) if met is not operator.ge else max(numbers)
            verdict = "ran" if met is None else "MET" if met(value, goal) else "missed"
            variant = name.rsplit("_s", 1)[-1].lstrip("_") if name.startswith("long_") else ""
            lines.append(f"{what:<52} {show(value):>10}  {show(goal):>8}  {verdict}{f' ({variant})' if variant else ''}")
        else:
            why = "; ".join(f"{name}: {v}" for name, v in found) or "not measured"
            lines.append(f"{what:<52} {'-':>10}  {show(goal):>8}  {why}")
    lines.append("")
    for what, name in CONTEXT:
        key = name.format(n=n)
        lines.append(f"{what.format(n=n):<52} {show(figures.get(key)):>10}  ({key})")
    return lines


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):  # "--help" was read as a file that is not there
        print(__doc__.strip(), file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    info, figures, missing = load(argv)
    for m in missing:
        print(f"not read: {m}")
    if info:
        print(f"{info.get('device')}, {info.get('dtype')}, {info.get('shape')} shape, {info.get('layers')} layers, "
              f"torch {info.get('torch')}; {info.get('minutes')}-minute meeting, batch {info.get('batch_size')}")
    print("\n".join(summary(info, figures)))
    return 0 if figures else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
