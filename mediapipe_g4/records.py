"""The plain, frozen records that stages hand to each other.

Every stage takes records and returns records; none reaches back into another stage.
Times are seconds from the start of the recording (the container's start offset removed).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

SAMPLE_RATE = 16_000  # Gemma 4 reads 16 kHz mono audio
# A result's `timings`, in the order the stages run ("total" is the wall time: some stages overlap)
STAGES = ("hash", "probe", "decode", "keyframes", "diarize", "plan", "transcribe", "names", "notes", "total")


def clock(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` past an hour: how times appear in prompts, TXT lines and reports."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


# What a model copies from its prompts into its answers, for the readers of those answers to strip or match: a time as
# `clock` writes it (with a subtitle's fraction, ",5" or ".5"), and an unnamed speaker's label ("S2", which models
# also write "Speaker 2" or "s 2"; group 1 is the number).
# [h:]mm:ss[.frac]: also "102:10" (minutes past 99), as a model asked for mm:ss writes a time past the first hour
CLOCK_PATTERN = r"(?:\d{1,2}:\d{2}:\d{2}|\d{1,3}:\d{2})(?:[.,]\d+)?"
SPEAKER_LABEL = re.compile(r"(?:speaker|s)\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class AudioStream:
    index: int
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None = None
    duration: float | None = None
    title: str | None = None  # the track's name, e.g. "Mic" (OBS and other recorders name their tracks)
    language: str | None = None
    start: float | None = None  # when the track starts, on the file's clock (a second track may start late)


@dataclass(frozen=True)
class VideoStream:
    index: int
    codec: str
    width: int
    height: int
    fps: float | None = None
    rotation: int = 0  # degrees, as the display matrix says
    duration: float | None = None
    is_cover_art: bool = False  # an attached picture (album art), not a moving video


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format_name: str
    duration: float
    start_time: float
    size_bytes: int
    audio_streams: tuple[AudioStream, ...] = ()
    video_streams: tuple[VideoStream, ...] = ()
    duration_estimated: bool = False  # FFmpeg guessed the duration from the bitrate (no index or header gives it)
    # The bytes of media the container's index describes (MP4/MOV: each stream's bit rate x duration, from its sample
    # table); None where the format does not say. A file much smaller was cut off (`media.cut_off`).
    indexed_bytes: int | None = None
    # A WAV whose header states less than the file holds (a recorder that stopped updating it, a size past 4 GB
    # wrapped around): how long the audio the file holds is; it is decoded whole (FFmpeg's `-ignore_length`).
    wav_held_seconds: float | None = None

    def audio_end(self, pick: int) -> float | None:
        """Where audio track `pick` ends, in seconds from the recording's start (its start, then its length; a track
        that starts late ends later than its length), or None when the file does not say how long it is."""
        stream = self.audio_streams[pick]
        if not stream.duration:
            return None
        return max(0.0, (stream.start if stream.start is not None else self.start_time) - self.start_time) \
            + stream.duration

    @property
    def decode_options(self) -> tuple[str, ...]:
        """FFmpeg's input options for decoding this file's audio."""
        return ("-ignore_length", "1") if self.wav_held_seconds else ()

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_streams)

    @property
    def has_video(self) -> bool:
        return any(not v.is_cover_art for v in self.video_streams)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Keyframe:
    """A slide or scene that appeared at `time` and stayed until `end`."""

    time: float
    end: float
    image_path: str  # JPEG in the work folder
    width: int
    height: int
    change: float = 1.0  # perceptual difference to the previous keyframe, 0..1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpeechRegion:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str  # "S1", "S2", ... stable over the whole recording

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Diarization:
    duration: float
    speakers: tuple[str, ...]
    turns: tuple[SpeakerTurn, ...]
    sides: dict[str, int] = field(default_factory=dict)  # speaker -> side (1, 2, ...) when found side by side

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "duration": round(self.duration, 3),
            "speakers": list(self.speakers),
            "turns": [
                {"start": round(t.start, 3), "end": round(t.end, 3), "speaker": t.speaker}
                for t in self.turns
            ],
        }
        if self.sides:
            out["sides"] = dict(self.sides)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diarization:
        return cls(data["duration"], tuple(data["speakers"]),
                   tuple(SpeakerTurn(t["start"], t["end"], t["speaker"]) for t in data["turns"]),
                   {str(k): int(v) for k, v in (data.get("sides") or {}).items()})


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    speaker: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "speaker": self.speaker, "text": self.text}


@dataclass(frozen=True)
class Speaker:
    id: str
    name: str
    talk_time: float
    evidence: tuple[dict[str, Any], ...] = field(default_factory=tuple)
