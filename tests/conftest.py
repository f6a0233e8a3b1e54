"""Shared fixtures: the committed samples, a corpus of bad inputs made with FFmpeg."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SAMPLE_NAMES = ("standup.mp4", "phone_call.wav", "interview.mp3")


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


def truth(name: str) -> dict:
    return json.loads((SAMPLES / f"{Path(name).stem}.truth.json").read_text())


def slides_request(folder: Path, count: int = 2):
    """A notes-like request: 40 transcript lines, then `count` slides (63 tokens each at 70) between short texts:
    about 960 tokens."""
    from PIL import Image

    from mediapipe_g4.engine import EngineRequest, GenerationSettings, ImagePart, TextPart

    parts = [TextPart(" ".join(f"Line {i}: the payment service." for i in range(40)))]
    for n in range(count):
        Image.new("RGB", (320, 240), (200, 40 * n, 40)).save(folder / f"slide{n}.png")
        parts += [ImagePart(str(folder / f"slide{n}.png")), TextPart(f"Slide {n} was shown.")]
    return EngineRequest("notes", (*parts, TextPart("Summarize.")), settings=GenerationSettings(max_new_tokens=5),
                         image_tokens=70)


def image_cut(types, size: int) -> bool:
    """Whether prefill chunks of `size` tokens cut an image or video (`mm_token_type_ids` 1 or 2) in two."""
    media = ((types == 1) | (types == 2)).any(dim=0)
    return any(bool(media[b - 1] and media[b]) for b in range(size, types.shape[1], size))


def ffmpeg(*args: str) -> None:
    from mediapipe_g4.media import ffmpeg_binary

    subprocess.run([ffmpeg_binary(), "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_corpus(tmp_path_factory) -> dict[str, Path]:
    """Small good and bad recordings, made once per test session."""
    d = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {}

    files["empty"] = d / "empty.wav"
    files["empty"].write_bytes(b"")
    files["text_mp4"] = d / "notes.mp4"
    files["text_mp4"].write_text("these are meeting notes, not a video\n")
    files["random"] = d / "random.mkv"
    files["random"].write_bytes(bytes((i * 7919 + 13) % 251 for i in range(40_000)))

    files["silent_video"] = d / "no audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=navy:s=320x240:d=3:r=5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(files["silent_video"]))
    files["odd_audio"] = d / "odd rate 6ch.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=2.5:sample_rate=11025", "-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0",
           "-c:a", "flac", str(files["odd_audio"]))
    files["unicode"] = d / "Réunion <b>équipe<i> & co 会议.ogg"
    ffmpeg("-f", "lavfi", "-i", "sine=f=500:d=1.5:sample_rate=48000", "-c:a", "libvorbis", str(files["unicode"]))

    full = d / "full.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:d=6:r=10", "-f", "lavfi", "-i", "sine=d=6",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(full))
    files["truncated"] = d / "truncated.mp4"
    files["truncated"].write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    # Its index first (as a recorder or `-movflags +faststart` writes it), then cut: the first part still decodes.
    whole_index_first = d / "index_first.mp4"
    ffmpeg("-i", str(full), "-c", "copy", "-movflags", "+faststart", str(whole_index_first))
    files["cut_off"] = d / "cut_off.mp4"
    files["cut_off"].write_bytes(whole_index_first.read_bytes()[: whole_index_first.stat().st_size // 2])

    files["broken_video"] = d / "broken video.mp4"  # good sound, a video stream no frame of which decodes
    ffmpeg("-i", str(SAMPLES / "standup.mp4"), "-c", "copy", "-bsf:v", "noise=amount=2", str(files["broken_video"]))

    files["offset"] = d / "offset.ts"
    ffmpeg("-f", "lavfi", "-i", "sine=f=400:d=2", "-c:a", "mp2", "-output_ts_offset", "5", str(files["offset"]))
    return files


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random `gemma4_unified` checkpoint (config, weights, processor, chat template), built once."""
    from tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gemma4"))


@pytest.fixture(scope="session")
def tiny_e2b_checkpoint(tmp_path_factory) -> Path:
    """A tiny random `gemma4` checkpoint, the E2B/E4B family (shared K/V layers, per-layer inputs, its own audio
    and vision towers), built once."""
    from tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gemma4-e2b"), family="gemma4")


@pytest.fixture(scope="session")
def tiny_drafter(tiny_checkpoint, tmp_path_factory) -> Path:
    """A tiny random MTP drafter (the `-assistant` checkpoints' layout) for the tiny checkpoint."""
    from tiny_model import build_tiny_drafter

    return build_tiny_drafter(tmp_path_factory.mktemp("tiny-drafter"), tiny_checkpoint)
