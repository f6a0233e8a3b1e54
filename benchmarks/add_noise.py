"""Noisy copies of recordings with ground truth, to check diarization beyond clean speech.

    python benchmarks/add_noise.py IN_DIR OUT_DIR --kind white --snr 20 [--seed 0]

Each recording in IN_DIR with a `<name>.truth.json` or `<name>.rttm` beside it is decoded to 16 kHz mono,
mixed with stationary noise (white: hiss, a cheap microphone's preamplifier; pink: a room's broadband noise;
brown: rumble, a fan or traffic) at the given signal-to-noise ratio, and written to OUT_DIR as `<name>.wav`
with its truth copied beside it. The SNR is against the speech's own level: the RMS over the times the truth
says someone speaks, not over the whole file (pauses would make the same noise look quieter). Deterministic
for a given seed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_diarization import MEDIA_SUFFIXES, truth_path, truth_turns  # noqa: E402

RATE = 16_000


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS stationary noise: white (flat), pink (1/f power) or brown (1/f^2 power)."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.arange(len(spectrum)), 1)
        spectrum /= np.sqrt(f) if kind == "pink" else f
        white = np.fft.irfft(spectrum, n)
    return white / np.sqrt(np.mean(white**2))


def noisy(wav: np.ndarray, spans: list[tuple[float, float, str]], kind: str, snr: float,
          rng: np.random.Generator) -> np.ndarray:
    active = np.zeros(len(wav), dtype=bool)
    for a, b, _ in spans:
        active[int(a * RATE):int(b * RATE)] = True
    level = float(np.sqrt(np.mean(np.square(wav[active] if active.any() else wav, dtype=np.float64))))
    mixed = wav + noise(kind, len(wav), rng) * level * 10 ** (-snr / 20)
    peak = float(np.max(np.abs(mixed))) if len(mixed) else 0.0
    return (mixed / peak * 0.99 if peak > 0.99 else mixed).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    from mediapipe_g4 import media as m

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--kind", choices=["white", "pink", "brown"], default="white")
    ap.add_argument("--snr", type=float, default=20.0, help="speech level over noise level, dB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    done = 0
    for media in sorted(args.source.iterdir()):
        truth = truth_path(media)
        if media.suffix.lower() not in MEDIA_SUFFIXES or not truth.is_file():
            continue
        with tempfile.TemporaryDirectory(prefix="g4noise-") as work:
            wav = np.array(m.decode_audio(media, work, info=m.probe(media)), dtype=np.float32)
        sf.write(args.out / f"{media.stem}.wav", noisy(wav, truth_turns(truth), args.kind, args.snr, rng), RATE)
        shutil.copy(truth, args.out / truth.name)
        done += 1
    print(f"{done} recordings with {args.kind} noise at {args.snr:g} dB SNR in {args.out}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
