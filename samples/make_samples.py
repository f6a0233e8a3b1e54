"""Synthesize the sample recordings and their ground truth with espeak-ng, sox and FFmpeg.

    python samples/make_samples.py [OUT_DIR]      # default: the folder of this script

Deterministic: espeak-ng and sox render the same samples on every run, the noise comes from a
seeded generator, and every utterance is placed at a known offset. Each recording gets
`<name>.truth.json` beside it: {"duration", "speakers", "segments", "slides"}, where a segment's
start/end are the true speech boundaries (espeak-ng's own leading/trailing silence trimmed).

`benchmarks/make_meetings.py` reuses `Voice`, `Turn` and `render_dialogue` for more meetings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

MASTER_RATE = 22_050  # espeak-ng's native rate; the mix is built at this rate, then encoded
FRAME = 220  # 10 ms at MASTER_RATE, for trimming
TRIM_DB = -40.0  # frames quieter than this (relative to the utterance's loudest frame) are silence


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice plus a sox timbre change."""

    id: str  # "S1", ...
    name: str
    espeak: str  # e.g. "en-us+f3"
    pitch: int = 50  # espeak -p, 0..99
    speed: int = 165  # espeak -s, words per minute
    sox: tuple[str, ...] = ()  # sox effects, e.g. ("pitch", "-150", "equalizer", "500", "1q", "4")

    def describe(self) -> str:
        extra = f" sox {' '.join(self.sox)}" if self.sox else ""
        return f"espeak-ng -v {self.espeak} -p {self.pitch} -s {self.speed}{extra}"


@dataclass(frozen=True)
class Turn:
    speaker: str  # Voice.id
    text: str
    gap: float = 0.5  # silence before this turn (0 = the speaker starts right as the last one stops)


def synth(text: str, voice: Voice, tmp: Path) -> np.ndarray:
    """One utterance at MASTER_RATE, float32, with espeak-ng's leading/trailing silence trimmed."""
    raw, out = tmp / "raw.wav", tmp / "out.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice.espeak, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", str(raw), text],
        check=True, capture_output=True,
    )
    # `rate` last: some effects (pitch) change nothing about the rate, but keep the output rate fixed anyway.
    subprocess.run(["sox", "-R", "-D", str(raw), "-r", str(MASTER_RATE), str(out), *voice.sox, "rate", "-h", str(MASTER_RATE)],
                   check=True, capture_output=True)
    audio, rate = sf.read(out, dtype="float32")
    assert rate == MASTER_RATE, rate
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return trim(audio)


def trim(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // FRAME
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > TRIM_DB)
    return audio[loud[0] * FRAME : (loud[-1] + 1) * FRAME]


def render_dialogue(
    voices: list[Voice], turns: list[Turn], *, lead_in: float = 0.6, tail: float = 1.0, level: float = 0.5
) -> tuple[np.ndarray, list[dict]]:
    """Mix the turns one after the other; return the waveform at MASTER_RATE and the truth segments."""
    by_id = {v.id: v for v in voices}
    pieces: list[tuple[int, np.ndarray]] = []
    segments: list[dict] = []
    t = round(lead_in * MASTER_RATE)
    with tempfile.TemporaryDirectory(prefix="g4samples-") as d:
        for i, turn in enumerate(turns):
            audio = synth(turn.text, by_id[turn.speaker], Path(d))
            audio = audio / (np.abs(audio).max() + 1e-9) * level
            if i:
                t += round(turn.gap * MASTER_RATE)
            pieces.append((t, audio))
            segments.append({
                "start": round(t / MASTER_RATE, 3),
                "end": round((t + len(audio)) / MASTER_RATE, 3),
                "speaker": turn.speaker,
                "text": turn.text,
            })
            t += len(audio)
    mix = np.zeros(t + round(tail * MASTER_RATE), dtype=np.float32)
    for start, audio in pieces:
        mix[start : start + len(audio)] += audio
    return mix, segments


def write_truth(path: Path, duration: float, voices: list[Voice], segments: list[dict], slides: list[dict]) -> None:
    truth = {
        "duration": round(duration, 3),
        "speakers": [{"id": v.id, "name": v.name, "voice": v.describe()} for v in voices],
        "segments": segments,
        "slides": slides,
    }
    path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


# --------------------------------------------------------------------------------------------
# a. stand-up meeting (video with slides)

STANDUP_VOICES = [
    Voice("S1", "Alice", "en-us+f3", pitch=62, speed=165, sox=("equalizer", "3000", "1q", "+3")),
    Voice("S2", "Bob", "en-gb+m1", pitch=32, speed=150, sox=("pitch", "-250", "equalizer", "300", "1q", "+4")),
    Voice("S3", "Carol", "en-gb-scotland+f4", pitch=70, speed=175, sox=("pitch", "200", "equalizer", "1500", "1q", "-4")),
]

STANDUP_TURNS = [
    Turn("S1", "Good morning everyone. Let's keep the stand-up short today. Bob, can you start with the payment service?"),
    Turn("S2", "Sure. Yesterday I finished the retry logic for failed payments. Today I will write the integration tests.", 0.6),
    Turn("S1", "Okay.", 0.3),
    Turn("S2", "One blocker. The staging database is still down, so I cannot run the load test.", 0.4),
    Turn("S3", "I can help with that. I restarted it this morning, and it should be back within an hour.", 0.0),
    Turn("S2", "Thanks, Carol.", 0.3),
    Turn("S1", "Great. Then we decide to ship the payment retry feature next Tuesday. Carol, what about the mobile release?", 0.7),
    Turn("S3", "The new login screen is done. We agreed to drop the old password reset page, because nobody uses it.", 0.5),
    Turn("S1", "Yes.", 0.25),
    Turn("S3", "I will send the release notes to the support team by Friday.", 0.4),
    Turn("S1", "Good. Bob, please update the API documentation by Friday as well.", 0.8),
    Turn("S2", "Will do, Alice.", 0.35),
    Turn("S1", "One open question. Who owns the on-call rotation next month? Let's decide that on Monday.", 0.6),
    Turn("S3", "Okay.", 0.3),
    Turn("S1", "Thanks, everyone. See you tomorrow.", 0.5),
]

STANDUP_SLIDES = [
    (0.0, "Daily Stand-up", ["Team Atlas", "Tuesday, 9:30", "Alice, Bob, Carol"]),
    (14.0, "Payment Service", ["Retry logic for failed payments: done", "Integration tests: today", "Blocker: staging database down"]),
    (31.0, "Mobile Release", ["New login screen: done", "Drop old password reset page", "Release notes to support"]),
    (50.0, "Action Items", ["Carol: release notes by Friday", "Bob: API documentation by Friday", "Open: on-call rotation owner?"]),
]


def render_slide(path: Path, title: str, bullets: list[str]) -> None:
    from PIL import Image, ImageDraw, ImageFont

    def font(size: int, bold: bool = False):
        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/Library/Fonts"):
            if os.path.exists(os.path.join(folder, name)):
                return ImageFont.truetype(os.path.join(folder, name), size)
        return ImageFont.load_default(size)

    img = Image.new("RGB", (640, 360), (246, 246, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 640, 8], fill=(40, 90, 160))
    draw.text((40, 40), title, fill=(20, 20, 30), font=font(36, bold=True))
    y = 120
    for line in bullets:
        draw.ellipse([44, y + 9, 54, y + 19], fill=(40, 90, 160))
        draw.text((70, y), line, fill=(30, 30, 40), font=font(22))
        y += 56
    img.save(path)


def make_standup(out: Path) -> None:
    mix, segments = render_dialogue(STANDUP_VOICES, STANDUP_TURNS)
    duration = len(mix) / MASTER_RATE
    with tempfile.TemporaryDirectory(prefix="g4standup-") as d:
        d = Path(d)
        wav = d / "audio.wav"
        sf.write(wav, mix, MASTER_RATE, subtype="PCM_16")
        lines = []
        for i, (time, title, bullets) in enumerate(STANDUP_SLIDES):
            png = d / f"slide{i}.png"
            render_slide(png, title, bullets)
            end = STANDUP_SLIDES[i + 1][0] if i + 1 < len(STANDUP_SLIDES) else duration
            lines += [f"file '{png}'", f"duration {end - time:.3f}"]
        lines.append(f"file '{d / f'slide{len(STANDUP_SLIDES) - 1}.png'}'")  # concat demuxer needs the last twice
        (d / "slides.txt").write_text("\n".join(lines) + "\n")
        ffmpeg(
            "-f", "concat", "-safe", "0", "-i", str(d / "slides.txt"), "-i", str(wav),
            "-map", "0:v", "-map", "1:a",
            "-vf", "fps=5,format=yuv420p", "-c:v", "libx264", "-tune", "stillimage", "-preset", "veryslow",
            "-crf", "30", "-g", "50", "-bitexact",
            "-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2",
            "-t", f"{duration:.3f}", "-movflags", "+faststart", "-fflags", "+bitexact",
            "-map_metadata", "-1", str(out / "standup.mp4"),
        )
    slides = [{"time": t, "title": title} for t, title, _ in STANDUP_SLIDES]
    write_truth(out / "standup.truth.json", duration, STANDUP_VOICES, segments, slides)


# --------------------------------------------------------------------------------------------
# b. phone call (8 kHz, band-limited, a little noise)

PHONE_VOICES = [
    Voice("S1", "Dana", "en-us+f2", pitch=58, speed=170, sox=("equalizer", "2500", "1q", "+3")),
    Voice("S2", "Mark", "en-us+m3", pitch=38, speed=155, sox=("pitch", "-200",)),
]

PHONE_TURNS = [
    Turn("S1", "Hello, this is Dana from the help desk. How can I help you today?"),
    Turn("S2", "Hi Dana, this is Mark. My laptop will not connect to the office network since yesterday.", 0.6),
    Turn("S1", "I see. Did you install the latest security update?", 0.5),
    Turn("S2", "No, I did not. Should I do that now?", 0.4),
    Turn("S1", "Yes, please install it and restart the laptop. That fixes the problem in most cases.", 0.0),
    Turn("S2", "Okay.", 0.3),
    Turn("S1", "If it still fails, I will open a ticket and send a technician by Thursday.", 0.6),
    Turn("S2", "Great, thank you Dana. I will call you back after the restart.", 0.5),
    Turn("S1", "You're welcome, Mark. Goodbye.", 0.4),
]


def make_phone_call(out: Path) -> None:
    mix, segments = render_dialogue(PHONE_VOICES, PHONE_TURNS, level=0.45)
    with tempfile.TemporaryDirectory(prefix="g4phone-") as d:
        src, dst = Path(d) / "mix.wav", out / "phone_call.wav"
        sf.write(src, mix, MASTER_RATE, subtype="FLOAT")
        tmp = Path(d) / "band.wav"
        subprocess.run(["sox", "-R", "-D", str(src), "-r", "8000", str(tmp), "sinc", "300-3400", "rate", "-h", "8000"],
                       check=True, capture_output=True)
        audio, rate = sf.read(tmp, dtype="float32")
        noise = np.random.default_rng(3).normal(0.0, 0.004, len(audio)).astype(np.float32)
        sf.write(dst, np.clip(audio + noise, -1, 1), rate, subtype="PCM_16")
    write_truth(out / "phone_call.truth.json", len(mix) / MASTER_RATE, PHONE_VOICES, segments, [])


# --------------------------------------------------------------------------------------------
# c. interview (48 kHz stereo MP3)

INTERVIEW_VOICES = [
    Voice("S1", "Sarah", "en-gb+f3", pitch=55, speed=160, sox=("equalizer", "800", "1q", "+3")),
    Voice("S2", "Tom", "en-us+m7", pitch=30, speed=145, sox=("pitch", "-300", "equalizer", "2500", "1q", "-3")),
]

INTERVIEW_TURNS = [
    Turn("S1", "Welcome to the show. Today my guest is Tom, who builds wind turbines. Tom, how did you start?"),
    Turn("S2", "Thank you, Sarah. I started as a mechanic on fishing boats, and later I moved to renewable energy.", 0.7),
    Turn("S1", "What is the hardest part of your work?", 0.5),
    Turn("S2", "The weather. We can only lift the blades when the wind is below ten meters per second.", 0.4),
    Turn("S1", "Right.", 0.2),
    Turn("S2", "So we plan every installation around the forecast, sometimes weeks ahead.", 0.3),
    Turn("S1", "And what comes next for your team?", 0.0),
    Turn("S2", "A new offshore farm with forty turbines. We decided to start construction in March.", 0.6),
    Turn("S1", "That sounds exciting. Thanks for joining us, Tom.", 0.5),
]


def make_interview(out: Path) -> None:
    mix, segments = render_dialogue(INTERVIEW_VOICES, INTERVIEW_TURNS)
    with tempfile.TemporaryDirectory(prefix="g4interview-") as d:
        src = Path(d) / "mix.wav"
        sf.write(src, mix, MASTER_RATE, subtype="PCM_16")
        ffmpeg("-i", str(src), "-ar", "48000", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "64k",
               "-map_metadata", "-1", "-fflags", "+bitexact", str(out / "interview.mp3"))
    write_truth(out / "interview.truth.json", len(mix) / MASTER_RATE, INTERVIEW_VOICES, segments, [])


def main(argv: list[str]) -> int:
    for tool in ("espeak-ng", "sox", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"make_samples: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 1
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    make_standup(out)
    make_phone_call(out)
    make_interview(out)
    for name in ("standup.mp4", "phone_call.wav", "interview.mp3"):
        truth = json.loads((out / (name.rsplit(".", 1)[0] + ".truth.json")).read_text())
        print(f"{name}: {truth['duration']:.1f} s, {len(truth['speakers'])} speakers, {len(truth['segments'])} segments")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
