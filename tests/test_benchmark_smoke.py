"""benchmarks/gpu_throughput.py --smoke: the tiny shape on the CPU prints its table and writes every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = [
    "transcribe_wall_s", "transcribe_audio_s", "transcribe_rtf", "transcribe_speed_x", "transcribe_peak_gb",
    "prefill_tokens_per_s_batch1", "decode_ms_per_step_batch1", "long_prefill_2048_s",
    "long_prefill_2048_tokens_per_s", "long_prefill_2048_peak_gb", "drafter_overhead_ms_per_token", "peak_gb",
]  # fmt: skip


@pytest.mark.slow
def test_gpu_throughput_smoke(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_throughput.py"),
            "--smoke",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    info, figures = data["info"], data["figures"]
    assert (
        info["dtype"] == "float32"
        and info["device"].startswith("cpu")
        and info["shape"] == "tiny"
    )
    assert (
        info["transcription_requests"] > 0
        and info["batch_size"] >= 1
        and info["notes_requests"] >= 1
    )
    batch = info["batch_size"]
    for name in EXPECTED + [
        f"prefill_tokens_per_s_batch{batch}",
        f"decode_ms_per_step_batch{batch}",
    ]:
        assert name in figures, name
    for name, value in figures.items():
        if isinstance(value, str):  # a figure that did not run says why
            assert value, name
        else:
            assert isinstance(value, (int, float)) and value > 0, (name, value)
    assert figures["drafter_overhead_ms_per_token"] == "skipped: no drafter"
    assert abs(figures["transcribe_audio_s"] - 120) < 10  # 2 minutes of turns
    for name in ("transcribe_rtf", "decode_ms_per_step_batch1", "long_prefill_2048_s"):
        assert isinstance(figures[name], float), name
    assert "transcribe_rtf" in run.stdout and "decode_ms_per_step_batch1" in run.stdout
