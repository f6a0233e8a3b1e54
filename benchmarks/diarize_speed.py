"""Diarization speed and memory on long recordings, on the CPU.

    python benchmarks/diarize_speed.py                  # 1.2 h recording = ~1 h of speech, then 2 h
    python benchmarks/diarize_speed.py --hours 1 --threads 2
    taskset -c 0,1 python benchmarks/diarize_speed.py   # pin to two cores, as the target assumes

Builds a long recording from the samples' speech (decoded to 16 kHz, concatenated with a little
gain change and noise so no two copies are identical), writes it as the raw float32 file that
`media.decode_audio` leaves in a work folder, and runs `diarize` on its memory map in a fresh
process per length, so each peak RSS (ru_maxrss) is that run's alone. Prints the figures.
Targets (issue 3): 1 h of speech in <= 60 s on 2 cores; a 2 h recording under 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES = ["standup.mp4", "phone_call.wav", "interview.mp3"]


def decode(path: Path) -> np.ndarray:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "16000",
         "-f", "f32le", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(out, dtype="<f4")


def build_recording(path: Path, hours: float) -> float:
    """Write `hours` of speech-dense audio to `path` (raw float32, 16 kHz); return its duration."""
    pieces = [decode(ROOT / "samples" / name) for name in SAMPLES]
    rng = np.random.default_rng(0)
    target = int(hours * 3600 * 16000)
    written = 0
    with open(path, "wb") as f:
        i = 0
        while written < target:
            piece = pieces[i % len(pieces)]
            gain = np.float32(rng.uniform(0.6, 1.2))
            noisy = piece * gain + rng.normal(0, 0.002, len(piece)).astype(np.float32)
            noisy = noisy[: target - written]
            f.write(noisy.astype("<f4").tobytes())
            written += len(noisy)
            i += 1
    return written / 16000


def child(path: str, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from mediapipe_g4.diarize import diarize
    from mediapipe_g4.vad import detect_speech

    n = os.path.getsize(path) // 4
    waveform = np.memmap(path, dtype="<f4", mode="r", shape=(n,))
    t0 = time.perf_counter()
    c0 = time.process_time()
    regions = detect_speech(waveform)
    t_vad = time.perf_counter() - t0
    result = diarize(waveform, regions=regions)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "audio_s": n / 16000,
        "speech_s": round(sum(r.duration for r in regions), 1),
        "wall_s": round(wall, 2),
        "vad_s": round(t_vad, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "speakers": len(result.speakers),
        "turns": len(result.turns),
        "threads": torch.get_num_threads(),
    }))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, nargs="*", default=[1.2, 2.0],
                    help="recording lengths (default 1.2 h, which holds about 1 h of speech, and 2 h)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.threads)
        return 0
    print(f"CPUs usable: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.2f}")
    print(f"{'audio':>8} {'speech':>8} {'wall s':>8} {'(VAD s)':>8} {'CPU s':>8} {'x real time':>11} "
          f"{'peak RSS MB':>11} {'speakers':>8}")
    with tempfile.TemporaryDirectory(prefix="g4speed-") as tmp:
        for hours in args.hours:
            path = Path(tmp) / f"audio_{hours:g}h.f32"
            build_recording(path, hours)
            cmd = [sys.executable, __file__, "--child", str(path)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['audio_s'] / 3600:>7.2f}h {r['speech_s'] / 3600:>7.2f}h {r['wall_s']:>8.1f} {r['vad_s']:>8.1f} "
                  f"{r['cpu_s']:>8.1f} {r['speech_s'] / r['wall_s']:>10.0f}x {r['peak_rss_mb']:>11.0f} "
                  f"{r['speakers']:>8}")
            path.unlink()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
