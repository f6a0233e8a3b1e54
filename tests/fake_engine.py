"""A scripted engine that replays model answers, for testing parsing, naming, notes and reports.

It never pretends to be a model in the product: it lives in tests/ only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mediapipe_g4.engine import EngineRequest


class ScriptedEngine:
    """Answers each request with `script(request)`; records every request it saw."""

    name = "scripted"

    def __init__(self, script: Callable[[EngineRequest], str] | dict[str, list[str] | str]):
        if isinstance(script, dict):
            queues = {k: (list(v) if isinstance(v, list) else v) for k, v in script.items()}

            def by_kind(req: EngineRequest) -> str:
                answer = queues.get(req.kind, "")
                return answer.pop(0) if isinstance(answer, list) and answer else (answer if isinstance(answer, str) else "")

            self.script = by_kind
        else:
            self.script = script
        self.seen: list[EngineRequest] = []
        self.calls = 0

    def generate(self, requests: Sequence[EngineRequest], hook=None) -> list[str]:
        self.calls += 1
        self.seen.extend(requests)
        return [self.script(r) for r in requests]
