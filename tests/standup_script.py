"""Realistic scripted model answers for samples/standup.mp4, built from its ground truth.

Transcription answers are the true words of the clip's time span (with the noise real answers carry:
a thought block, special tokens); the naming answer gives names with evidence the transcript holds;
the notes answer is what a good model would write. Tests pick which notes answers to replay.
"""

from __future__ import annotations

import json
import re

from conftest import truth

from mediapipe_g4.engine import EngineRequest, clean_response

NOTES = {
    "summary": "Short daily stand-up. Bob finished the retry logic for failed payments and is writing "
               "integration tests; the load test is blocked until Carol's restart of the staging database "
               "comes back. The mobile team finished the new login screen.",
    "decisions": [
        {"text": "Ship the payment retry feature next Tuesday.", "time": 30},
        {"text": "Drop the old password reset page; nobody uses it.", "time": "00:37"},
    ],
    "action_items": [
        {"text": "Write the integration tests for the payment retry logic.", "owner": "Bob", "due": None, "time": 10},
        {"text": "Send the release notes to the support team.", "owner": "Carol", "due": "Friday", "time": 43},
        {"text": "Update the API documentation.", "owner": "Bob", "due": "Friday", "time": 47},
    ],
    "chapters": [
        {"start": 0, "title": "Opening"}, {"start": 8, "title": "Payment service"},
        {"start": 29, "title": "Mobile release"}, {"start": 47, "title": "Action items and wrap-up"},
    ],
    "questions": [{"text": "Who owns the on-call rotation next month?", "time": 54}],
}

WHO = {"Bob": "Yesterday I finished", "Carol": "I restarted it", "Alice": "Good morning everyone"}
EVIDENCE = {"Bob": "Bob, can you start", "Carol": "Thanks, Carol", "Alice": "Will do, Alice"}


def _line_times(prompt: str) -> list[tuple[float, str, str]]:
    lines = []
    for m in re.finditer(r"^\[(\d+):(\d+)\] (\S+): (.*)$", prompt, re.MULTILINE):
        lines.append((int(m.group(1)) * 60 + int(m.group(2)), m.group(3), m.group(4)))
    return lines


def standup_engine_script(notes_answers: list[str] | None = None, *, inject: str = ""):
    """A script for tests.fake_engine.ScriptedEngine. `notes_answers` are replayed in order for the notes
    (and repair) requests; by default one good answer. `inject` is appended to the first clip's text."""
    segments = truth("standup.mp4")["segments"]
    queue = list(notes_answers) if notes_answers is not None else [json.dumps(NOTES)]
    state = {"first": True}

    def answer(req: EngineRequest) -> str:
        if req.kind == "transcribe":
            words = " ".join(s["text"] for s in segments if req.start - 0.3 <= (s["start"] + s["end"]) / 2 <= req.end + 0.3)
            if state["first"] and inject:
                words, state["first"] = f"{words} {inject}", False
            # what a real answer looks like before cleaning
            return clean_response(f"<|channel>thought\n<channel|>{words}<turn|><eos>")
        prompt = "\n".join(getattr(p, "text", "") for p in req.parts)
        if req.kind == "names":
            found = {}
            lines = _line_times(prompt)
            for name, marker in WHO.items():
                ids = [sid for _, sid, text in lines if marker in text]
                quote_at = [t for t, _, text in lines if EVIDENCE[name] in text]
                if ids and quote_at:
                    found[ids[0]] = {"name": name, "quote": EVIDENCE[name], "time": quote_at[0]}
            found["S9"] = {"name": "Zed", "quote": "nobody said this", "time": 3}  # must be dropped
            return "```json\n" + json.dumps(found) + "\n```"
        if req.kind in ("notes", "notes_repair"):
            return queue.pop(0) if queue else "I cannot write notes for this meeting."
        return "A part of the meeting about payments and the mobile release."  # section summaries

    return answer
