"""What a model engine takes and gives: requests of text, audio and images in; clean texts out.

A request's audio is a (start, end) slice of the recording's waveform, which stays memory-mapped:
only the slice being sent is ever read. Images are JPEG paths. Engines (in-process transformers, or an
OpenAI-compatible server) implement `Engine.generate`; the planner makes requests they can take as-is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .records import SAMPLE_RATE

log = logging.getLogger("mediapipe_g4")

Hook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class AudioPart:
    """Seconds `start`..`end` of `waveform` (16 kHz mono float32); the waveform is referenced, not copied."""

    start: float
    end: float
    waveform: np.ndarray | None = field(default=None, compare=False, repr=False)
    source: str = ""  # which waveform: "" the recording's (mixed), "side2" one side of it (sides.py)

    @classmethod
    def of(cls, samples: np.ndarray) -> AudioPart:
        """A whole array as one clip."""
        return cls(0.0, len(samples) / SAMPLE_RATE, samples)

    def sample_range(self) -> tuple[int, int]:
        """The sample indices this clip covers: the one rule both the planner and the engines use."""
        return round(self.start * SAMPLE_RATE), round(self.end * SAMPLE_RATE)

    @property
    def num_samples(self) -> int:
        first, last = self.sample_range()
        return max(0, last - first)

    @property
    def seconds(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def samples(self) -> np.ndarray:
        if self.waveform is None:
            raise ValueError("this audio part has no waveform attached (a plan-only request)")
        from .vad import release_pages

        first, last = self.sample_range()
        clip = np.array(self.waveform[first:last], dtype=np.float32)  # a copy: the pages are dropped next
        # Transcription reads every clip once: pages left resident made a 3-hour recording's process 690 MB bigger.
        release_pages(self.waveform, first, last)
        return clip


@dataclass(frozen=True)
class ImagePart:
    path: str


Part = TextPart | AudioPart | ImagePart


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode. Greedy for transcription; the model card's sampling (1.0 / 0.95 / 64) otherwise."""

    max_new_tokens: int = 256
    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    enable_thinking: bool = False
    seed: int | None = None  # seeds sampling, so a rerun samples the same answer; greedy decoding needs none


@dataclass(frozen=True)
class EngineRequest:
    """One prompt: an optional system text and the user turn's parts, in order.

    `kind` says what it is for ("transcribe", "notes_section", "notes_merge", "notes"); `start`/`end`
    are the recording's times it covers; `tokens` is the planner's prompt-token count (0 if not
    planned) and `estimated` says whether that count is an estimate rather than the processor's exact one.
    """

    kind: str
    parts: tuple[Part, ...]
    start: float = 0.0
    end: float = 0.0
    system: str | None = None
    settings: GenerationSettings = GenerationSettings()
    image_tokens: int = 280  # soft tokens per image: 70, 140, 280, 560 or 1120
    tokens: int = 0
    estimated: bool = False
    speaker: str | None = None
    # A transcription clip's speech, inside its padded audio: the times its segment gets (None: start to end).
    speech: tuple[float, float] | None = None

    @property
    def audio(self) -> tuple[AudioPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, AudioPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ImagePart))

    @property
    def audio_seconds(self) -> float:
        return sum(p.seconds for p in self.audio)

    @property
    def sent_parts(self) -> tuple[Part, ...]:
        """The user turn as the model gets it: the system text first, then the parts, adjacent texts as one with a
        blank line between. Gemma 4's template trims each text part and joins parts with nothing between them (an
        instruction given as a part of its own ran into the transcript after it: "...Output only the JSON.[00:01]
        Alice: ..."), and writes a system turn's content as it is: vLLM hands a chat template the content as a
        list of parts, which the template wrote as its Python repr. In the user turn, the system text reads the
        same in-process and on every server."""
        parts: list[Part] = []
        for part in ((TextPart(self.system),) if self.system else ()) + self.parts:
            if isinstance(part, TextPart) and parts and isinstance(parts[-1], TextPart):
                parts[-1] = TextPart(f"{parts[-1].text.rstrip()}\n\n{part.text.lstrip()}")
            else:
                parts.append(part)
        return tuple(parts)

    def messages(self, *, with_media: bool = True) -> list[dict[str, Any]]:
        """Chat messages in the transformers format; without media the parts are bare placeholders."""
        content: list[dict[str, Any]] = []
        for part in self.sent_parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, AudioPart):
                content.append({"type": "audio", "audio": part.samples()} if with_media else {"type": "audio"})
            else:
                content.append({"type": "image", "path": part.path} if with_media else {"type": "image"})
        return [{"role": "user", "content": content}]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "speaker": self.speaker,
            "audio_seconds": round(float(self.audio_seconds), 3),
            **({"audio_from": sources[0]} if (sources := [a.source for a in self.audio if a.source]) else {}),
            "images": len(self.images),
            "tokens": self.tokens,
            "estimated": self.estimated,
            "max_new_tokens": self.settings.max_new_tokens,
        }


@runtime_checkable
class Engine(Protocol):
    """Anything that turns requests into texts, in the requests' order, batching as it sees fit."""

    name: str

    def generate(self, requests: Sequence[EngineRequest], hook: Hook | None = None) -> list[str]: ...


# --------------------------------------------------------------------------- output cleaning

# A thought block: Gemma 4's channel, and the <think> of other chat templates and servers' reasoning formats.
THOUGHT_BLOCK = re.compile(r"<\|channel>.*?<channel\|>|<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_STOPS = ("<turn|>", "<eos>", "<|tool_response>")
# Gemma 4 control tokens look like <|name>, <name|>, <|name|>; plus the classic <pad>/<bos>/<eos>/<unk>.
_SPECIAL = re.compile(r"<\|[A-Za-z_\"]+\|?>|<[A-Za-z_]+\|>|<(?:pad|bos|eos|unk|mask)>")


def clean_response(text: str, *, tokenizer: Any = None, prefix: str | None = None) -> str:
    """The answer in a model output decoded with `skip_special_tokens=False`.

    With a tokenizer that has a response template, its `parse_response` does it (it needs the prompt
    as `prefix`, since the template pre-fills the empty thought block); otherwise thought blocks
    (`<|channel>thought ... <channel|>` or `<think>...</think>`, also an unclosed one, and the end of one a
    template opened in the prompt) and special tokens are stripped here.
    """
    for stop in _STOPS:  # the answer ends at the first stop; padding of finished rows follows it
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    if tokenizer is not None and prefix is not None and getattr(tokenizer, "response_template", None):
        try:
            parsed = tokenizer.parse_response(text, prefix=prefix)
            content = parsed.get("content") if isinstance(parsed, dict) else None
            if isinstance(content, str):
                return content.strip()
        except Exception as exc:  # noqa: BLE001 - a parser failure must not lose the text
            log.debug("parse_response failed (%s); stripping markers instead", exc)
    text = THOUGHT_BLOCK.sub("", text).rsplit("</think>", 1)[-1]  # (after a thought the prompt opened)
    for opening in ("<|channel>", "<think>"):
        unclosed = text.find(opening)
        if unclosed >= 0:  # a thought cut off by max_new_tokens: no answer came after it
            text = text[:unclosed]
    if tokenizer is not None:
        for token in sorted(getattr(tokenizer, "all_special_tokens", ()), key=len, reverse=True):
            if token:
                text = text.replace(token, "")
    text = _SPECIAL.sub("", text)
    return text.strip()
