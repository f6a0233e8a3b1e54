"""Write the samples' references for `g4media eval` from their ground truth, so the two never disagree.

    python samples/make_references.py           # samples/<name>.rttm and samples/<name>.stm from <name>.truth.json

RTTM (who spoke when) and STM (what was said) use the speakers' names as labels (spaces become `_`), the
recording's stem as the file id and channel 1. `standup.notes.json` (expected decisions and action items) is
written by hand from the dialogue, not by this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def labels(truth: dict) -> dict[str, str]:
    return {s["id"]: (s.get("name") or s["id"]).replace(" ", "_") for s in truth["speakers"]}


def rttm_text(stem: str, truth: dict) -> str:
    names = labels(truth)
    return "".join(f"SPEAKER {stem} 1 {s['start']:.3f} {s['end'] - s['start']:.3f} <NA> <NA> "
                   f"{names[s['speaker']]} <NA> <NA>\n" for s in truth["segments"])


def stm_text(stem: str, truth: dict) -> str:
    names = labels(truth)
    return ";; generated from " + stem + ".truth.json by make_references.py\n" + "".join(
        f"{stem} 1 {names[s['speaker']]} {s['start']:.3f} {s['end']:.3f} {' '.join(s['text'].split())}\n"
        for s in truth["segments"])


def main(folder: Path = HERE) -> None:
    for truth_path in sorted(folder.glob("*.truth.json")):
        stem = truth_path.name[: -len(".truth.json")]
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        (folder / f"{stem}.rttm").write_text(rttm_text(stem, truth), encoding="utf-8")
        (folder / f"{stem}.stm").write_text(stm_text(stem, truth), encoding="utf-8")
        print(f"wrote {stem}.rttm, {stem}.stm")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
