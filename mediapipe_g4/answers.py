"""Every model answer, kept in the work folder the moment it is finished.

`CachedEngine` wraps an engine: requests answered before (same prompt, same audio slice, same images,
same decoding settings, same model) come from disk; the rest go to the engine in chunks, and each
chunk's answers are written atomically before the next starts (an engine with `streams_answers`, such as
the server engine, hands back each answer as it finishes, and each is written at once). A run killed at
any moment loses at most the chunk (or the answers) in flight, and the engine (the model's weights) is
loaded only if something is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .atomic import write_json
from .engine import AudioPart, Engine, EngineRequest, ImagePart, TextPart

log = logging.getLogger("mediapipe_g4")

Hook = Callable[[str, int, int], None]

# C0 and C1 control characters other than tab, newline and carriage return: a random or byte-fallback token
# can decode to them (NUL included), and they have no place in a transcript, a subtitle file or a report.
# Control characters, and U+FFFD: what decoding leaves of an incomplete UTF-8 byte sequence (a byte-level token
# cut off at the answer's budget, or a random model's bytes); it says nothing a reader can use.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


def printable(answer: str) -> str:
    """A model answer without control characters or U+FFFD (the cache keeps the answer as the model gave it)."""
    return _CONTROL.sub("", answer)


def request_key(request: EngineRequest) -> str:
    """A stable key for what the model sees and how it decodes: parts, system text, settings."""
    parts = []
    for part in request.sent_parts:
        if isinstance(part, TextPart):
            parts.append(["text", part.text])
        elif isinstance(part, AudioPart):
            parts.append(["audio", *part.sample_range(), *([part.source] if part.source else [])])
        elif isinstance(part, ImagePart):
            parts.append(["image", Path(part.path).name])
    settings = dataclasses.asdict(request.settings)
    if settings["seed"] is None:  # unseeded requests keep the keys they had before there was a seed
        del settings["seed"]
    blob = json.dumps(
        [request.kind, request.system, parts, request.image_tokens, settings],
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class CachedEngine:
    """An Engine whose answers persist in `folder`; the real engine is made only when needed."""

    def __init__(self, make_engine: Callable[[], Engine], folder: str | Path, *, chunk_size: int = 8,
                 fresh: bool = False, name: str = "cached"):
        self._make_engine = make_engine
        self._engine: Engine | None = None
        self.folder = Path(folder)
        self.chunk_size = max(1, chunk_size)
        self.fresh = fresh
        self.name = name
        self.generated = 0  # answers the model produced in this process
        self.reused = 0  # answers read from disk

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def _load(self, key: str) -> str | None:
        if self.fresh:
            return None
        path = self._path(key)
        try:
            answer = json.loads(path.read_text(encoding="utf-8"))["answer"]
            if not isinstance(answer, str):
                raise ValueError(f"its answer is {type(answer).__name__}, not text")
            return answer
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a damaged cached answer %s (%s)", path.name, exc)
            return None

    def generate(self, requests: Sequence[EngineRequest], hook: Hook | None = None) -> list[str]:
        keys = [request_key(r) for r in requests]
        answers: list[str | None] = [self._load(k) for k in keys]
        todo = [i for i, a in enumerate(answers) if a is None]
        self.reused += len(requests) - len(todo)
        step = requests[0].kind if requests else "generate"
        done = len(requests) - len(todo)
        if done:  # what a rerun after an interruption saves (-v)
            log.info("%s: %d of %d answers from the work folder (%s)%s", step, done, len(requests), self.folder,
                     f", {len(todo)} to generate" if todo else "")
        if hook:
            hook(step, done, len(requests))

        def keep(i: int, text: str) -> None:
            write_json(self._path(keys[i]), {"kind": requests[i].kind, "start": requests[i].start,
                                             "end": requests[i].end, "answer": text})
            answers[i] = text

        # Longest first within the model's own batching; chunks keep similar lengths together.
        todo.sort(key=lambda i: -requests[i].tokens)
        if todo and getattr(self.engine, "streams_answers", False):
            # A server engine hands back each answer as it finishes (many in flight): keep each at once,
            # so a kill loses only the answers in flight.
            for pos, text in self.engine.iter_generate([requests[i] for i in todo]):
                keep(todo[pos], text)
                self.generated += 1
                done += 1
                if hook:
                    hook(step, done, len(requests))
            todo = []
        for lo in range(0, len(todo), self.chunk_size):
            chunk = todo[lo : lo + self.chunk_size]
            for i, text in zip(chunk, self.engine.generate([requests[i] for i in chunk]), strict=True):
                keep(i, text)
            self.generated += len(chunk)
            done += len(chunk)
            if hook:
                hook(step, done, len(requests))
        return [printable(a) if a is not None else "" for a in answers]
