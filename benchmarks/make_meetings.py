"""Generate extra synthetic meetings (not committed) to check diarization beyond the samples.

    python benchmarks/make_meetings.py OUT_DIR [--count 6] [--seed 100] [--minutes M] [--sides]

Each meeting gets other voices, pause lengths, turn lengths and speaker counts than the samples:
2-5 speakers drawn from a pool of espeak-ng voices the samples do not use, turns of one to four
sentences, pauses from none to 1.5 s, backchannels, and one of several containers (16 kHz WAV,
44.1 kHz stereo MP3, 8 kHz phone WAV). Ground truth `<name>.truth.json` has the samples' format.
Deterministic for a given seed. `--minutes M` makes meetings of about M minutes instead (1-2 by default) whose
sentences are composed from parts, so that a long meeting does not repeat the same few sentences (an exact
repeat gives the same voice windows again, which no real meeting does). `--sides` writes each meeting as a call
between two sides instead: a 16 kHz stereo WAV, speakers S1, S3, ... on the left and S2, S4, ... on the right,
each side hearing the other 20 dB down (3 ms late) over a noise floor, as two microphones in one room do.
`--room-mics` writes two microphones in a room instead: odd speakers near the left one, even near the right (14 dB
down on the far one), and with three or more speakers the last between them (alike on both): not the sides of a
call, which g4media must not take them for.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))
from make_samples import MASTER_RATE, Turn, Voice, ffmpeg, render_dialogue, write_truth

# Voices not used by the samples. Each is a distinct espeak-ng variant/accent, pitch and timbre.
VOICE_POOL = [
    ("Emma", "en-us+f1", 66, 160, ("equalizer", "2000", "1q", "+2")),
    ("Frank", "en-us+m2", 28, 150, ("pitch", "-300",)),
    ("Grace", "en-gb-x-rp+f5", 72, 170, ("pitch", "150",)),
    ("Hugo", "en-029+m4", 45, 165, ("equalizer", "400", "1q", "+4")),
    ("Iris", "en-us-nyc+f2", 52, 180, ("pitch", "250", "equalizer", "3000", "1q", "-3")),
    ("Jack", "en-gb-x-gbcwmd+m6", 38, 140, ("pitch", "-120", "equalizer", "1200", "1q", "+3")),
    ("Kate", "en-gb+annie", 60, 155, ()),
    ("Leo", "en-us+m5", 55, 175, ("pitch", "-450", "equalizer", "250", "1q", "+3")),
    ("Mia", "en-gb-scotland+f1", 80, 165, ("pitch", "80",)),
    ("Noah", "en+klatt4", 35, 160, ("pitch", "-200",)),
    ("Olga", "en-us+belinda", 48, 150, ("equalizer", "800", "1q", "+4")),
    ("Paul", "en-gb-x-rp+m8", 42, 185, ("equalizer", "2500", "1q", "-4")),
]

SENTENCES = [
    "We reviewed the budget for the next quarter.",
    "The customer asked for a faster delivery of the new module.",
    "I think we should move the launch to the end of the month.",
    "Our test coverage went up to eighty percent this week.",
    "The marketing team needs the final screenshots before Thursday.",
    "Can we agree on one owner for the database migration?",
    "The server costs are higher than we expected.",
    "I talked to the design team about the onboarding flow.",
    "There is still one bug in the export feature.",
    "Let's schedule a short review with the client on Wednesday.",
    "The new hire starts on Monday and needs a laptop.",
    "I will prepare the slides for the board meeting.",
    "We have to decide whether to keep the old dashboard.",
    "The latency dropped by half after the cache change.",
    "Please send me the contract draft before lunch.",
    "Sales in the north region grew faster than planned.",
    "I'm not sure the vendor can deliver on time.",
    "The documentation for the public interface is almost ready.",
    "We should hire a second support engineer this year.",
    "The pilot with the hospital went better than we hoped.",
    "My main concern is the security review next week.",
    "The mobile app crashed twice on older phones.",
    "We could reuse the payment module from last year.",
    "Let's write down the action items before we finish.",
]
BACKCHANNELS = ["Okay.", "Yes.", "Right.", "Sure.", "Mhm, yes.", "Good.", "Exactly."]

# Parts of composed sentences for long meetings (--minutes): thousands of different sentences.
SUBJECTS = ["The team", "Our client", "The finance group", "I", "We", "The new intern", "Support", "The vendor",
            "Marketing", "The board", "Engineering", "My manager", "The Berlin office", "Legal"]
VERBS = ["finished", "reviewed", "postponed", "started", "rejected", "approved", "tested", "rewrote", "discussed",
         "measured", "simplified", "priced", "documented", "cancelled"]
OBJECTS = ["the pricing page", "the invoice export", "the search index", "the hiring plan", "the quarterly report",
           "the login flow", "the backup script", "the partner contract", "the travel budget",
           "the release checklist", "the data warehouse", "the onboarding survey", "the warehouse robots",
           "the annual audit", "the customer newsletter", "the error dashboard"]
TAILS = ["yesterday", "last Friday", "this morning", "before the holidays", "after the demo", "in March",
         "two weeks ago", "without any problems", "with some delays", "for the second time", "over the weekend",
         "together with the designers"]
QUESTIONS = ["Who owns {o} now?", "How long will {o} take?", "Should we move {o} to next week?",
             "Did anyone look at {o} since Monday?", "What is blocking {o}?", "Can we split {o} into two parts?"]


def composed_sentence(rng: np.random.Generator) -> str:
    obj = str(rng.choice(OBJECTS))
    if rng.random() < 0.2:
        return str(rng.choice(QUESTIONS)).format(o=obj)
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {obj} {rng.choice(TAILS)}."

FORMATS = ["wav16", "mp3", "phone"]


def make_meeting(out: Path, name: str, seed: int, minutes: float | None = None, sides: bool = False,
                 room_mics: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    n_speakers = int(rng.integers(2, 6))
    picks = rng.choice(len(VOICE_POOL), size=n_speakers, replace=False)
    voices = [
        Voice(f"S{i + 1}", *VOICE_POOL[p][:2], pitch=VOICE_POOL[p][2], speed=VOICE_POOL[p][3], sox=VOICE_POOL[p][4])
        for i, p in enumerate(picks)
    ]
    style = rng.choice(["short", "mixed", "long"])
    max_sentences = {"short": 1, "mixed": 3, "long": 4}[style]
    turns: list[Turn] = []
    last = None
    target = float(rng.uniform(45, 75)) + 8 * n_speakers  # seconds of meeting, roughly
    if minutes:
        target = 60 * minutes
    min_turns = 3 * n_speakers  # everyone speaks more than once
    est = 0.0
    # Everyone speaks early, so the count is decidable; then a random order without self-repeats.
    order = [v.id for v in voices]
    while est < target or len(turns) < min_turns:
        spk = order.pop(0) if order else str(rng.choice([v.id for v in voices if v.id != last]))
        if rng.random() < 0.15 and last is not None and turns:
            text = str(rng.choice(BACKCHANNELS))
        else:
            n = int(rng.integers(1, max_sentences + 1))
            if minutes:
                text = " ".join(composed_sentence(rng) for _ in range(n))
            else:
                text = " ".join(str(s) for s in rng.choice(SENTENCES, size=n, replace=False))
        gap = float(rng.choice([0.0, rng.uniform(0.15, 0.4), rng.uniform(0.4, 0.9), rng.uniform(0.9, 1.5)],
                               p=[0.15, 0.35, 0.35, 0.15]))
        turns.append(Turn(spk, text, round(gap, 2)))
        est += 0.075 * len(text) + gap
        last = spk
    mix, segments = render_dialogue(voices, turns, lead_in=float(rng.uniform(0.2, 1.5)), tail=1.0)
    # Only speakers who actually spoke are in the truth (the order above makes that all of them).
    fmt = "sides" if sides or room_mics else FORMATS[seed % len(FORMATS)]
    with tempfile.TemporaryDirectory(prefix="g4meeting-") as d:
        src = Path(d) / "mix.wav"
        sf.write(src, mix, MASTER_RATE, subtype="PCM_24")
        if fmt == "sides":
            path = out / f"{name}.wav"
            gains = {v.id: ((1.0, 0.0), (0.0, 1.0))[i % 2] for i, v in enumerate(voices)}
            if room_mics:
                gains = {v.id: ((1.0, 0.2), (0.2, 1.0))[i % 2] for i, v in enumerate(voices)}
                if len(voices) >= 3:
                    gains[voices[-1].id] = (0.6, 0.6)
            stereo = np.zeros((len(mix), 2), dtype=np.float32)
            for seg in segments:  # the turns follow one another: each is the mix's, over its span
                a, b = round(seg["start"] * MASTER_RATE), round(seg["end"] * MASTER_RATE)
                stereo[a:b] = mix[a:b, None] * np.asarray(gains[seg["speaker"]], dtype=np.float32)
            late = round(0.003 * MASTER_RATE)
            heard = stereo.copy()
            if not room_mics:  # each side hears the other's voice
                heard[late:] += 0.1 * stereo[:-late, ::-1]
            heard += np.random.default_rng(seed).normal(0, 0.002, heard.shape).astype(np.float32)
            sf.write(src, np.clip(heard, -1, 1), MASTER_RATE, subtype="PCM_24")
            subprocess.run(["sox", "-R", "-D", str(src), "-b", "16", "-r", "16000", str(path)], check=True)
        elif fmt == "wav16":
            path = out / f"{name}.wav"
            subprocess.run(["sox", "-R", "-D", str(src), "-b", "16", "-r", "16000", str(path)], check=True)
        elif fmt == "mp3":
            path = out / f"{name}.mp3"
            ffmpeg("-i", str(src), "-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "96k",
                   "-fflags", "+bitexact", str(path))
        else:
            path = out / f"{name}.wav"
            band = Path(d) / "band.wav"
            subprocess.run(["sox", "-R", "-D", str(src), "-r", "8000", str(band), "sinc", "300-3400"], check=True)
            audio, rate = sf.read(band, dtype="float32")
            audio = audio + np.random.default_rng(seed).normal(0, 0.004, len(audio)).astype(np.float32)
            sf.write(path, np.clip(audio, -1, 1), rate, subtype="PCM_16")
    write_truth(out / f"{name}.truth.json", len(mix) / MASTER_RATE, voices, segments, [])
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--seed", type=int, default=100, help="first seed; meeting i uses seed + i")
    ap.add_argument("--minutes", type=float, help="about this long, with composed sentences (default: 1-2 minutes)")
    ap.add_argument("--sides", action="store_true", help="calls: stereo, odd speakers left, even speakers right")
    ap.add_argument("--room-mics", action="store_true", help="two microphones in a room (not sides of a call)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        seed = args.seed + i
        path = make_meeting(args.out, f"meeting_{seed}", seed, args.minutes, args.sides, args.room_mics)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
