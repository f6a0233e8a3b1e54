"""From speaker turns and keyframes to model requests that obey Gemma 4's limits and this machine's memory.

Transcription: one request per clip of at most 30 s (750 audio tokens, the processor's cap), a clip
being a speaker turn, or a piece of a long one cut at its quietest moment near the limit (a pause, never
inside a word); the instruction first, then the clip, then optionally the keyframe on screen.

Notes: the meeting as one time-ordered timeline (transcript lines and keyframes) in one request if it
fits the context budget; otherwise summaries of consecutive sections, then one request over the
summaries (repeated if even those do not fit). Before transcription the lines are not known: each turn
is then estimated at `transcript_tokens_per_second` tokens per second of speech and the notes requests
are marked as estimates; given the transcript, the same functions fit the real timeline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .engine import (
    AudioPart,
    EngineRequest,
    GenerationSettings,
    ImagePart,
    Part,
    TextPart,
)
from .errors import PlanError
from .prompts import (
    LAYOUTS,
    MERGE_PROMPT,
    NOTES_FROM_SUMMARIES_PROMPT,
    NOTES_PROMPT,
    NOTES_SYSTEM,
    SECTION_PROMPT,
    clock,
    in_language,
    transcription_parts,
    with_vocabulary,
)
from .records import SAMPLE_RATE, Keyframe, Segment, SpeakerTurn
from .token_count import SOFT_TOKEN_SIZES, TokenCounter
from .transcript import segments_from_answers

log = logging.getLogger("mediapipe_g4")

MAX_CLIP_SECONDS = 30.0  # audio_seq_length 750 tokens x 40 ms


@dataclass(frozen=True)
class PlanOptions:
    max_clip: float = MAX_CLIP_SECONDS  # seconds of audio per transcription request
    cut_search: float = 10.0  # a long turn is cut at the quietest moment in the last this-many seconds
    pause_window: float = 0.15  # ... measured as the energy over this long, so a pause wins over a consonant
    pad: float = 0.2  # seconds of context around a turn, never past the middle of the gap to the next one
    merge_gap: float = 0.5  # consecutive turns of one speaker this close share a clip (if it stays <= max_clip)
    keyframe_tokens: int = 0  # soft tokens of the keyframe beside a clip: 0 (none), 70, 140 or 280
    notes_image_tokens: int = 280  # soft tokens of each keyframe in the notes timeline
    language: str | None = None  # e.g. "English"; None lets the model tell
    translate_to: str | None = None
    # The language the notes are written in: by default the transcript's (translate_to, else language); None with
    # neither leaves the notes prompts as they are (the model picks, usually the transcript's).
    notes_language: str | None = None
    layout: str = "text-audio-image"  # order of instruction, clip and keyframe (see prompts.LAYOUTS)
    vocabulary: tuple[str, ...] = ()  # names and terms to spell right (prompts.parse_vocabulary), in every prompt
    transcribe_max_new_tokens: int = 320  # 30 s of fast speech is ~130 tokens; room for other scripts
    answer_tokens_per_second: float = 10.0  # a clip's answer budget: this many tokens a second of audio + 48
    notes_max_new_tokens: int = 4096
    section_max_new_tokens: int = 1024
    transcript_tokens_per_second: float = 3.5  # ~160 words a minute at ~1.3 tokens a word
    context_tokens: int | None = None  # the notes prompt + answer budget; None: what memory allows
    seed: int = 0  # the notes are sampled (the model card's settings): same seed, prompt and machine, same notes

    def __post_init__(self) -> None:
        if self.notes_language is None and (self.translate_to or self.language):
            object.__setattr__(self, "notes_language", self.translate_to or self.language)
        if not 1.0 <= self.max_clip <= MAX_CLIP_SECONDS:
            raise PlanError(f"a clip must be 1 to {MAX_CLIP_SECONDS:g} s long (Gemma 4 hears at most 30 s at once), "
                            f"not {self.max_clip:g} s")
        if self.keyframe_tokens and self.keyframe_tokens not in SOFT_TOKEN_SIZES:
            raise PlanError(f"keyframe tokens must be 0 (none) or one of {SOFT_TOKEN_SIZES}, "
                            f"not {self.keyframe_tokens}")
        if self.notes_image_tokens not in SOFT_TOKEN_SIZES:
            raise PlanError(f"image tokens must be one of {SOFT_TOKEN_SIZES}, not {self.notes_image_tokens}")
        if self.layout not in LAYOUTS:
            raise PlanError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- transcription


def clip_spans(
    turns: Sequence[SpeakerTurn], waveform: np.ndarray, options: PlanOptions = PlanOptions(),
    sources: Mapping[str, tuple[str, np.ndarray]] | None = None,
) -> list[tuple[int, int, str]]:
    """(first sample, end sample, speaker) of every clip: all speech, none longer than `max_clip` (a long turn
    is cut at a pause in the speaker's own waveform, from `sources` when given)."""
    total = len(waveform)
    limit = int(options.max_clip * SAMPLE_RATE)
    ordered = sorted((t for t in turns if t.end > t.start), key=lambda t: (t.start, t.end))
    merged: list[list[Any]] = []  # [start s, end s, speaker]
    for t in ordered:
        start, end = max(0.0, t.start), min(total / SAMPLE_RATE, t.end)
        if end <= start:
            continue
        last = merged[-1] if merged else None
        if (last and last[2] == t.speaker and start - last[1] <= options.merge_gap
                and end - last[0] <= options.max_clip):
            last[1] = max(last[1], end)
        else:
            merged.append([start, end, t.speaker])

    spans: list[tuple[int, int, str]] = []
    for i, (start, end, speaker) in enumerate(merged):
        # Pad, but stop half-way to a neighbour's speech (overlapping neighbours get no padding).
        before = merged[i - 1][1] if i else 0.0
        after = merged[i + 1][0] if i + 1 < len(merged) else total / SAMPLE_RATE
        lo = max(0.0, start - options.pad, min(start, (before + start) / 2)) if i else max(0.0, start - options.pad)
        hi = min(total / SAMPLE_RATE, end + options.pad, max(end, (end + after) / 2))
        first, last = round(lo * SAMPLE_RATE), round(hi * SAMPLE_RATE)
        own = _own_audio(speaker, waveform, sources)[1]
        while last - first > limit:
            cut = quietest_point(own, first, first + limit, options)
            spans.append((first, cut, speaker))
            first = cut
        if last > first:
            spans.append((first, last, speaker))
    return spans


def _speech_in(turns: Sequence[SpeakerTurn], speaker: str, start: float, end: float) -> tuple[float, float]:
    """Where `speaker`'s turns lie inside the clip `start`-`end`: the clip without its padding (a piece cut from a
    long turn ends at the cut). The transcript's times are the speech's, as the speaker turns say, not the clip's."""
    inside = [(max(t.start, start), min(t.end, end)) for t in turns
              if t.speaker == speaker and t.start < end and t.end > start]
    if not inside:
        return start, end
    return min(a for a, _ in inside), max(b for _, b in inside)


def _own_audio(speaker: str, waveform: np.ndarray, sources: Mapping[str, tuple[str, np.ndarray]] | None
               ) -> tuple[str, np.ndarray]:
    """(name, waveform) a speaker's clips come from: their own side in `sources`, else ("", the recording's)."""
    return sources[speaker] if sources and speaker in sources else ("", waveform)


def quietest_point(waveform: np.ndarray, first: int, limit: int, options: PlanOptions = PlanOptions()) -> int:
    """The sample to cut at between `limit - cut_search` and `limit`: the middle of the quietest stretch.

    Energy is averaged over `pause_window`, so the cut lands in a pause rather than in the short
    silence of a stop consonant; among near-equal minima the latest wins (longer clips, fewer requests).
    """
    hop = SAMPLE_RATE // 100  # 10 ms
    lo = max(first + hop, limit - int(options.cut_search * SAMPLE_RATE))
    n = (limit - lo) // hop
    if n < 3:
        return limit
    frames = np.asarray(waveform[lo : lo + n * hop], dtype=np.float32).reshape(n, hop)
    energy = np.square(frames, dtype=np.float64).mean(axis=1)
    width = max(1, int(options.pause_window * 100))
    if n > width:
        smooth = np.convolve(energy, np.ones(width) / width, mode="valid")  # smooth[k]: frames k..k+width-1
    else:
        smooth, width = energy, 1
    floor = smooth.min()
    quiet = smooth <= floor * 2.0 + 1e-12  # within 3 dB of the quietest: the same pause (or noise floor)
    k = int(np.flatnonzero(smooth <= floor * 1.05 + 1e-12)[-1])
    a, b = k, k  # widen to the whole pause and cut in its middle
    while a > 0 and quiet[a - 1]:
        a -= 1
    while b + 1 < len(smooth) and quiet[b + 1]:
        b += 1
    return lo + ((a + b) // 2) * hop + (width * hop) // 2


def keyframe_at(keyframes: Sequence[Keyframe], time: float) -> Keyframe | None:
    """The keyframe on screen at `time`, if any."""
    on = [k for k in keyframes if k.time <= time < max(k.end, k.time + 1e-6)]
    return on[-1] if on else None


def answer_budget(seconds: float, options: PlanOptions = PlanOptions()) -> int:
    """max_new_tokens of one clip's transcription: room for its speech at a fast pace in any script (twice that
    with a translation, which repeats it), rounded up to 64, at most `transcribe_max_new_tokens` (twice that with a
    translation). A decoding loop on a short clip then stops at its own budget, not at the longest clip's."""
    times = 2 if options.translate_to else 1
    need = math.ceil(seconds * options.answer_tokens_per_second * times) + 48
    return min(options.transcribe_max_new_tokens * times, -(-need // 64) * 64)


def plan_transcription(
    turns: Sequence[SpeakerTurn],
    waveform: np.ndarray,
    keyframes: Sequence[Keyframe] = (),
    options: PlanOptions = PlanOptions(),
    counter: TokenCounter | None = None,
    sources: Mapping[str, tuple[str, np.ndarray]] | None = None,
) -> tuple[EngineRequest, ...]:
    """One greedy transcription request per clip; audio is referenced as a slice of `waveform`, or of the
    speaker's own in `sources` (speaker -> (name, waveform): their side of a call, `sides.py`)."""
    requests = []
    for first, last, speaker in clip_spans(turns, waveform, options, sources):
        start, end = first / SAMPLE_RATE, last / SAMPLE_RATE
        label, own = _own_audio(speaker, waveform, sources)
        settings = GenerationSettings(max_new_tokens=answer_budget(end - start, options), greedy=True)
        frame = keyframe_at(keyframes, (start + end) / 2) if options.keyframe_tokens else None
        parts = transcription_parts(
            AudioPart(start, end, own, label),
            ImagePart(frame.image_path) if frame else None,
            language=options.language,
            translate_to=options.translate_to,
            layout=options.layout,
            vocabulary=options.vocabulary,
        )
        request = EngineRequest(
            kind="transcribe", parts=parts, start=start, end=end, settings=settings,
            image_tokens=options.keyframe_tokens or 280, speaker=speaker, speech=_speech_in(turns, speaker, start, end),
        )
        if counter is not None:
            request = replace(request, tokens=counter.count(request), estimated=not counter.exact)
        requests.append(request)
    return tuple(requests)


# --------------------------------------------------------------------------- notes

TimelineEntry = Segment | SpeakerTurn | Keyframe  # a SpeakerTurn is speech not yet transcribed


def entry_time(entry: TimelineEntry) -> float:
    return entry.time if isinstance(entry, Keyframe) else entry.start


def build_timeline(
    speech: Sequence[Segment | SpeakerTurn], keyframes: Sequence[Keyframe] = ()
) -> tuple[TimelineEntry, ...]:
    """Transcript lines (or turns) and keyframes in time order; a keyframe goes before speech at its time."""
    entries: list[TimelineEntry] = [*keyframes, *speech]
    return tuple(sorted(entries, key=lambda e: (entry_time(e), 0 if isinstance(e, Keyframe) else 1)))


def _line(entry: Segment | SpeakerTurn) -> str:
    text = entry.text.strip() if isinstance(entry, Segment) else "…"
    return f"[{clock(entry.start)}] {entry.speaker}: {text}"


def timeline_parts(entries: Sequence[TimelineEntry]) -> tuple[Part, ...]:
    """Lines joined by newlines; each keyframe as a `[mm:ss] On screen:` label, then its image.

    The chat template trims each text part and joins parts with nothing between them, so a label ends
    the text before its image, and the text after an image follows the image's end marker.
    """
    parts: list[Part] = []
    lines: list[str] = []
    for entry in entries:
        if isinstance(entry, Keyframe):
            lines.append(f"[{clock(entry.time)}] On screen:")
            parts.append(TextPart("\n".join(lines)))
            parts.append(ImagePart(entry.image_path))
            lines = []
        else:
            lines.append(_line(entry))
    if lines:
        parts.append(TextPart("\n".join(lines)))
    return tuple(parts)


def _estimate_extra(entries: Sequence[TimelineEntry], options: PlanOptions) -> int:
    """Tokens that untranscribed turns will add beyond their `…` placeholder."""
    return sum(
        math.ceil(e.duration * options.transcript_tokens_per_second)
        for e in entries if isinstance(e, SpeakerTurn)
    )


def _notes_like(kind: str, instruction: str, body: tuple[Part, ...], start: float, end: float, max_new: int,
                options: PlanOptions, counter: TokenCounter, extra: int, estimated: bool) -> EngineRequest:
    request = EngineRequest(
        kind=kind,
        parts=(TextPart(with_vocabulary(in_language(instruction, options.notes_language), options.vocabulary)), *body),
        start=start,
        end=end,
        system=NOTES_SYSTEM,
        settings=GenerationSettings(max_new_tokens=max_new, greedy=False, seed=options.seed),
        image_tokens=options.notes_image_tokens,
    )
    return replace(request, tokens=counter.count(request) + extra, estimated=estimated or not counter.exact)


def _notes_request(entries: Sequence[TimelineEntry], options: PlanOptions, counter: TokenCounter) -> EngineRequest:
    start = entry_time(entries[0]) if entries else 0.0
    end = max((e.end for e in entries), default=start)
    extra = _estimate_extra(entries, options)
    return _notes_like("notes", NOTES_PROMPT, timeline_parts(entries), start, end, options.notes_max_new_tokens,
                       options, counter, extra, extra > 0)


def _section_request(entries: Sequence[TimelineEntry], options: PlanOptions, counter: TokenCounter) -> EngineRequest:
    start = entry_time(entries[0])
    # Its last speech, not the end of a slide still on screen (one shown to the end gave the first part the whole
    # meeting's range, and parts overlapped)
    end = max((e.end for e in entries if not isinstance(e, Keyframe)), default=max(e.end for e in entries))
    words = int(options.section_max_new_tokens * 0.6)
    instruction = SECTION_PROMPT.format(start=clock(start), end=clock(end), words=words)
    extra = _estimate_extra(entries, options)
    return _notes_like("notes_section", instruction, timeline_parts(entries), start, end,
                       options.section_max_new_tokens, options, counter, extra, extra > 0)


def _entry_cost(entry: TimelineEntry, options: PlanOptions, counter: TokenCounter) -> int:
    if isinstance(entry, Keyframe):
        label = f"\n[{clock(entry.time)}] On screen:"
        return counter.text_tokens(label) + counter.image_tokens(entry.image_path, options.notes_image_tokens) + 2
    extra = math.ceil(entry.duration * options.transcript_tokens_per_second) if isinstance(entry, SpeakerTurn) else 0
    return counter.text_tokens("\n" + _line(entry)) + extra


def _boundary_score(entries: Sequence[TimelineEntry], j: int) -> float:
    """How good a place to start a new section entry j is: after a long silence, or at a new slide."""
    previous_end = max((getattr(e, "end", entry_time(e)) for e in entries[:j][-3:]), default=0.0)
    gap = max(0.0, entry_time(entries[j]) - previous_end)
    return gap + (5.0 if isinstance(entries[j], Keyframe) else 0.0)


def split_sections(
    entries: Sequence[TimelineEntry], budget: int, options: PlanOptions, counter: TokenCounter
) -> list[tuple[TimelineEntry, ...]]:
    """Consecutive sections whose requests (prompt + answer) each fit `budget` tokens."""
    empty = _section_request(entries[:1], options, counter).tokens - _entry_cost(entries[0], options, counter)
    room = budget - options.section_max_new_tokens - empty
    costs = [_entry_cost(e, options, counter) for e in entries]
    if room <= 0 or max(costs) > room:
        need = empty + max(costs) + options.section_max_new_tokens
        raise PlanError(f"a context budget of {budget} tokens cannot hold even one section of the meeting "
                        f"(it needs at least {need}); raise --context-tokens")
    sections: list[tuple[TimelineEntry, ...]] = []
    left = sum(costs)
    i = 0
    while i < len(entries):
        # Sections of about equal size: filled to the brim, a 3-hour meeting's third section held 15 minutes
        # beside two of 80, and its summary then weighed as much as theirs in the notes.
        target = min(room, left / math.ceil(left / room) * 1.1)
        used, j = 0, i
        while j < len(entries) and used + costs[j] <= target:
            used += costs[j]
            j += 1
        j = max(j, i + 1)
        if j < len(entries):  # not the last section: start the next one at the best boundary in the last quarter
            cumulative, best, best_score = 0, j, -1.0
            for k in range(i + 1, j + 1):
                cumulative += costs[k - 1]
                if cumulative >= 0.75 * target and k < len(entries):
                    score = _boundary_score(entries, k)
                    if score >= best_score:
                        best, best_score = k, score
            j = best
        section = tuple(entries[i:j])
        # The sum of line costs approximates the rendered prompt; check the real count and shrink if needed.
        while len(section) > 1 and (
                _section_request(section, options, counter).tokens + options.section_max_new_tokens > budget):
            section = section[:-1]
        sections.append(section)
        left -= sum(costs[i : i + len(section)])
        i += len(section)
    return sections


def plan_notes(
    timeline: Sequence[TimelineEntry],
    budget: int,
    options: PlanOptions = PlanOptions(),
    counter: TokenCounter | None = None,
) -> tuple[EngineRequest, ...]:
    """The notes request if the timeline fits `budget` tokens (prompt + answer); else sections then merges.

    At plan time (turns instead of transcript lines) the merge requests are estimated with full-length
    section summaries; at run time call `plan_merge` with the summaries the sections produced.
    """
    counter = counter or TokenCounter()
    entries = tuple(sorted(timeline, key=lambda e: (entry_time(e), 0 if isinstance(e, Keyframe) else 1)))
    whole = _notes_request(entries, options, counter)
    if whole.tokens + options.notes_max_new_tokens <= budget or not entries:
        return (whole,)
    sections = [_section_request(s, options, counter) for s in split_sections(entries, budget, options, counter)]
    requests: list[EngineRequest] = list(sections)
    summaries = [(r.start, r.end, None) for r in sections]
    while True:
        merges = plan_merge(summaries, budget, options, counter)
        requests.extend(merges)
        if len(merges) == 1 and merges[0].kind == "notes":
            return tuple(requests)
        summaries = [(r.start, r.end, None) for r in merges]


def _summary_parts(summaries: Sequence[tuple[float, float, str | None]], options: PlanOptions) -> tuple[str, int]:
    """The summaries as text; unknown ones (None) as placeholders, with the tokens they will add."""
    chunks, extra = [], 0
    for start, end, text in summaries:
        chunks.append(f"[{clock(start)} - {clock(end)}]\n{text.strip() if text is not None else '…'}")
        if text is None:
            extra += options.section_max_new_tokens
    return "\n\n".join(chunks), extra


def _merge_request(summaries: Sequence[tuple[float, float, str | None]], final: bool, options: PlanOptions,
                   counter: TokenCounter) -> EngineRequest:
    body, extra = _summary_parts(summaries, options)
    words = int(options.section_max_new_tokens * 0.6)
    task = NOTES_FROM_SUMMARIES_PROMPT if final else (
        "Merge them into one summary of this longer part for someone who will write notes of the whole meeting, "
        f"keeping every decision, action item (owner, due date, time), open question and topic change. "
        f"Plain text, at most {words} words."
    )
    instruction = MERGE_PROMPT.format(task=task)
    return _notes_like("notes" if final else "notes_merge", instruction, (TextPart(body),), summaries[0][0],
                       summaries[-1][1], options.notes_max_new_tokens if final else options.section_max_new_tokens,
                       options, counter, extra, extra > 0)


def plan_merge(
    summaries: Sequence[tuple[float, float, str | None]],
    budget: int,
    options: PlanOptions = PlanOptions(),
    counter: TokenCounter | None = None,
) -> tuple[EngineRequest, ...]:
    """The final notes request over section summaries ((start, end, text), in order) if they fit;
    else merge requests over groups of them (run those, then call again with their answers)."""
    counter = counter or TokenCounter()
    final = _merge_request(summaries, True, options, counter)
    if final.tokens + options.notes_max_new_tokens <= budget:
        return (final,)
    if len(summaries) < 2:
        raise PlanError(f"a context budget of {budget} tokens cannot hold the notes prompt over one section "
                        f"summary ({final.tokens + options.notes_max_new_tokens} tokens); raise --context-tokens")
    # Greedy groups of consecutive summaries; a group of one is rewritten on its own (rare, and harmless).
    groups: list[list[tuple[float, float, str | None]]] = []
    for summary in summaries:
        if groups and _merge_request([*groups[-1], summary], False, options, counter).tokens \
                + options.section_max_new_tokens <= budget:
            groups[-1].append(summary)
        else:
            groups.append([summary])
    merges = tuple(_merge_request(g, False, options, counter) for g in groups)
    if all(len(g) == 1 for g in groups) or any(
            r.tokens + options.section_max_new_tokens > budget for r in merges):
        raise PlanError(f"a context budget of {budget} tokens is too small to merge the section summaries; "
                        "raise --context-tokens")
    return merges


# --------------------------------------------------------------------------- the whole plan


@dataclass(frozen=True)
class Plan:
    """Every request a recording needs, with token counts, totals and the memory they need."""

    duration: float
    model: str
    context_window: int
    context_budget: int
    budget_from: str  # "--context-tokens", "memory", "the model's window" or "a fallback: the model does not fit"
    exact: bool  # token counts from the model's processor (True) or estimated (False)
    counts_from: str
    requests: tuple[EngineRequest, ...]
    options: PlanOptions = PlanOptions()
    memory: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    counter: TokenCounter | None = field(default=None, compare=False, repr=False)  # what counted the tokens

    def totals(self) -> dict[str, Any]:
        kinds: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            k = kinds.setdefault(r.kind, {"requests": 0, "tokens": 0, "audio_seconds": 0.0, "images": 0,
                                          "max_tokens": 0})
            k["requests"] += 1
            k["tokens"] += r.tokens
            k["audio_seconds"] += r.audio_seconds
            k["images"] += len(r.images)
            k["max_tokens"] = max(k["max_tokens"], r.tokens)
        for k in kinds.values():
            k["audio_seconds"] = round(k["audio_seconds"], 3)
        return {
            "requests": len(self.requests),
            "tokens": sum(r.tokens for r in self.requests),
            "max_new_tokens": sum(r.settings.max_new_tokens for r in self.requests),
            "by_kind": kinds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 3),
            "model": self.model,
            "context_window": self.context_window,
            "context_budget": self.context_budget,
            "budget_from": self.budget_from,
            "exact": self.exact,
            "counts_from": self.counts_from,
            "requests": [r.to_dict() for r in self.requests],
            "totals": self.totals(),
            "memory": self.memory,
            "options": self.options.to_dict(),
            "warnings": list(self.warnings),
        }


def make_plan(
    waveform: np.ndarray,
    turns: Sequence[SpeakerTurn],
    keyframes: Sequence[Keyframe] = (),
    *,
    model: str | None = None,
    options: PlanOptions = PlanOptions(),
    device: str | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
    processor: Any = None,
    sources: Mapping[str, tuple[str, np.ndarray]] | None = None,
    notes: bool = True,
    notes_model: str | None = None,
) -> Plan:
    """Every request for a recording (the notes' only with `notes`), counted with the model's processor when its
    files are here.

    Only the processor and config files are read (from a folder or the Hugging Face cache, never the
    network); without them counts are estimated and the memory is that of the published 12B shape. A
    `notes_model` other than `model` (`--transcribe-model`) writes the notes: their budget and batch are its
    shape's, in the memory the transcription model, still loaded, leaves it.
    """
    from . import memory as mem
    from .errors import ModelError
    from .transformers_engine import DEFAULT_MODEL, download_hint, load_processor, model_shape, resolve_model

    model = model or DEFAULT_MODEL
    resolve_model(model)  # a local folder that is not there is an error, not an estimate
    warnings: list[str] = []
    counts_from = f"the processor of {model}"
    if processor is None:
        try:
            processor = load_processor(model, local_only=True)
        except ModelError as exc:
            counts_from = "estimate"
            warnings.append(f"token counts are estimates (audio and images exact, text about 4 characters a "
                            f"token): {exc}")
    counter = TokenCounter(processor)

    stand_ins: set[str] = set()  # models whose memory is estimated as the 12B's

    def shape_of(name: str) -> mem.ModelShape:
        try:
            return model_shape(name)
        except ModelError:
            if resolve_model(name)[1]:  # a folder whose config does not load: the run would stop there too
                raise
            if name != DEFAULT_MODEL:
                stand_ins.add(name)
                warnings.append(f"no config for {name} here, so memory is estimated for the 12B; "
                                f"{download_hint(name, processor_only=True)}")
            return mem.GEMMA4_12B

    shape = shape_of(model)
    chosen_device = mem.pick_device(device)
    if quantize and not chosen_device.startswith("cuda"):
        warnings.append(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes): a run here on {chosen_device} "
                        "would stop; this plan is the memory it would take on one")
    chosen_dtype = mem.choose_dtype(shape, chosen_device, dtype, quantize)
    memory = mem.device_memory(chosen_device)
    notes_shape, notes_dtype, notes_memory = shape, chosen_dtype, memory
    if notes_model and notes_model != model:
        notes_shape = shape_of(notes_model)
        notes_dtype = mem.choose_dtype(notes_shape, chosen_device, dtype, quantize)
        left = memory.available - mem.weights_bytes(shape, chosen_dtype, quantize)
        notes_memory = replace(memory, available=max(left, 0.0))
    if options.context_tokens:
        budget, budget_from = min(options.context_tokens, notes_shape.context_window), "--context-tokens"
        if options.context_tokens > notes_shape.context_window:
            warnings.append(f"--context-tokens {options.context_tokens} is more than the model's window; "
                            f"using {notes_shape.context_window}")
    else:
        budget, warning = mem.default_context_budget(notes_shape, notes_memory, dtype=notes_dtype, quantize=quantize)
        # "from memory" beside "DOES NOT FIT" read as a contradiction; the whole window is the model's limit
        stand_in = (notes_model or model) in stand_ins
        budget_from = (f"a fallback: {'the 12B it was estimated as' if stand_in else 'the model'} does not fit"
                       if warning else "the model's window" if budget >= notes_shape.context_window else "memory")
        if warning and not stand_in:  # "the 12B does not fit", of an E4B, misleads
            warnings.append(warning)

    # The notes' answers fit the budget: a 4096-token context (a llama.cpp slot) had no room for the 4096 of the
    # notes' answer, and every run stopped here, before one clip was transcribed.
    options = replace(options, notes_max_new_tokens=min(options.notes_max_new_tokens, budget // 2),
                      section_max_new_tokens=min(options.section_max_new_tokens, budget // 4))
    transcribe = plan_transcription(turns, waveform, keyframes, options, counter, sources)
    # The notes will read the transcript's segments, the clips joined as the run joins them (a turn's, a minute at
    # most), not whole turns: a lecture's one 40-minute turn, planned whole, fitted no section of a small budget,
    # though its segments at run time do. Each clip answered with a placeholder word: the segments' times.
    placeholders = ["words"] * len(transcribe)
    heard = [SpeakerTurn(s.start, s.end, s.speaker) for s in segments_from_answers(transcribe, placeholders)]
    try:  # no speech: `summarize` asks for no notes (they are "skipped"), so none are planned
        notes = plan_notes(build_timeline(heard, keyframes), budget, options, counter) if notes and heard else ()
    except PlanError as exc:  # the transcript is still worth making; the notes say why they are missing
        warnings.append(f"no notes can be planned: {exc}")
        notes = ()
    longest = max((r.tokens + r.settings.max_new_tokens for r in transcribe), default=0)
    notes_longest = max((r.tokens + r.settings.max_new_tokens for r in notes), default=0)
    batch = mem.default_batch_size(shape, memory, max(longest, 1), dtype=chosen_dtype, quantize=quantize)
    transcription_peak = mem.peak_bytes(shape, longest, batch=batch, dtype=chosen_dtype, quantize=quantize)
    # Notes requests fill the context budget: far fewer of them fit at once than of 30 s clips.
    notes_batch = mem.default_batch_size(notes_shape, notes_memory, max(notes_longest, 1), dtype=notes_dtype,
                                         quantize=quantize)
    notes_peak = mem.peak_bytes(notes_shape, notes_longest, dtype=notes_dtype, quantize=quantize)
    if notes_shape is not shape:  # beside the transcription model's weights
        notes_peak += mem.weights_bytes(shape, chosen_dtype, quantize)
    memory_report = {
        **memory.to_dict(),
        "dtype": chosen_dtype,
        "quantize": quantize,
        "weights_gb": round(mem.weights_bytes(shape, chosen_dtype, quantize) / mem.GB, 1),
        "kv_mb_per_1k_tokens": round(shape.kv_bytes_per_token(mem.dtype_bytes(chosen_dtype)) * 1000 / 1e6, 1),
        "transcription_batch": batch,
        "transcription_peak_gb": round(transcription_peak / mem.GB, 1),
        "notes_batch": notes_batch,
        "notes_peak_gb": round(notes_peak / mem.GB, 1),
        "fits": max(transcription_peak, notes_peak) <= 0.9 * memory.available,
    }
    return Plan(
        duration=len(waveform) / SAMPLE_RATE,
        model=model,
        context_window=notes_shape.context_window,
        context_budget=budget,
        budget_from=budget_from,
        exact=counter.exact,
        counts_from=counts_from if counter.exact else "estimate",
        requests=(*transcribe, *notes),
        options=options,
        memory=memory_report,
        warnings=tuple(warnings),
        counter=counter,
    )


SHOWN_TRANSCRIBE = (20, 10)  # the plan's table shows this many transcription requests at the start and the end


def _shown_requests(requests: Sequence[EngineRequest]) -> set[int]:
    """Indexes of the requests the table shows: all notes requests, and the first and last transcription requests.

    A 3-hour recording has thousands of clips; listed one a line they bury the notes requests and the totals.
    """
    clips = [i for i, r in enumerate(requests) if r.kind == "transcribe"]
    head, tail = SHOWN_TRANSCRIBE
    hidden = set(clips[head:-tail]) if len(clips) > head + tail + 1 else set()
    return {i for i in range(len(requests)) if i not in hidden}


def _hidden_line(hidden: Sequence[EngineRequest]) -> str:
    return (f"{'':>4}  ... {len(hidden):,} more transcribe requests, {clock(hidden[0].start)} to "
            f"{clock(hidden[-1].end)} (--json lists every request)")


def format_plan(plan: Plan, *, name: str = "") -> str:
    """The plan as a readable table: the requests (a long recording's middle clips as one line), the totals per
    kind, memory and warnings."""
    rows = [
        f"{name or 'recording'}: {clock(plan.duration)} ({plan.duration:.1f} s), model {plan.model}",
        (f"context: window {plan.context_window:,} tokens, notes budget {plan.context_budget:,} "
         f"(from {plan.budget_from}); token counts {'exact, from ' + plan.counts_from if plan.exact else 'ESTIMATED'}"),
        "",
        f"{'#':>4}  {'kind':<14}{'start':>9}{'end':>9}  {'speaker':<8}{'audio s':>8}{'images':>7}{'tokens':>9}",
    ]
    shown = _shown_requests(plan.requests)
    hidden: list[EngineRequest] = []
    for i, r in enumerate(plan.requests, 1):
        if i - 1 not in shown:
            hidden.append(r)
            continue
        if hidden:
            rows.append(_hidden_line(hidden))
            hidden = []
        mark = "~" if r.estimated else ""
        rows.append(f"{i:>4}  {r.kind:<14}{clock(r.start):>9}{clock(r.end):>9}  {r.speaker or '-':<8}"
                    f"{r.audio_seconds:>8.2f}{len(r.images):>7}{mark + format(r.tokens, ','):>9}")
    if hidden:
        rows.append(_hidden_line(hidden))
    totals = plan.totals()
    rows += ["", f"{'totals':<20}{'requests':>9}{'tokens':>11}{'max':>8}{'audio s':>10}{'images':>8}"]
    for kind, t in totals["by_kind"].items():
        rows.append(f"{kind:<20}{t['requests']:>9}{t['tokens']:>11,}{t['max_tokens']:>8,}"
                    f"{t['audio_seconds']:>10.1f}{t['images']:>8}")
    rows.append(f"{'all':<20}{totals['requests']:>9}{totals['tokens']:>11,}   (+ up to {totals['max_new_tokens']:,} "
                "generated)")
    m = plan.memory
    if m:
        rows += ["", (f"memory: {m['name']} ({m['device']}), {m['available_gb']} of {m['total_gb']} GB available; "
                      f"weights {m['weights_gb']} GB {m['dtype']}{' ' + m['quantize'] if m['quantize'] else ''}, "
                      f"KV cache {m['kv_mb_per_1k_tokens']} MB per 1k tokens"),
                 (f"        transcription {m['transcription_batch']} per batch, peak ~{m['transcription_peak_gb']} GB; "
                  f"notes peak ~{m['notes_peak_gb']} GB; {'fits' if m['fits'] else 'DOES NOT FIT'}")]
    if any(r.estimated for r in plan.requests):
        rows.append(f"~ estimated: speech not yet transcribed counts {plan.options.transcript_tokens_per_second:g} "
                    "tokens per second" + ("" if plan.exact else "; text at about 4 characters a token"))
    rows += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(rows)
