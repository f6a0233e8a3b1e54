"""Gemma 4 throughput on one accelerator, with random weights (speed depends on shapes, not weight values).

    python benchmarks/gpu_throughput.py --minutes 30              # 12B shape, bf16, on the GPU
    python benchmarks/gpu_throughput.py --minutes 120 --json out.json
    python benchmarks/gpu_throughput.py --smoke                   # tiny shape, CPU, ~35 s on 2 cores

Builds the model from a config directly on the device (`--shape 12b`: the published 12B text shape
with the default audio/vision towers; `--shape tiny`: tests/tiny_model.py's config), makes a synthetic
meeting (alternating speakers, 3-20 s turns, short pauses, noise at speech level), plans it with the
project's planner (plan_transcription, plan_notes) and runs the transcription requests through the
project's TransformersEngine in batches, each answer as long as its clip's speech at a meeting's pace (or
all of one length) and <eos> held back, since random weights would stop anywhere.
Then times: prefill of a batch of full 30 s requests, decode ms/step at batch 1 and at the batch used,
long text prefills in 8 k chunks into a DynamicCache, and the MTP drafter (random weights by default:
its cost per draft step, not its acceptance).
Prints a table; --json PATH writes the figures (a number, or a reason string for what did not run).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import long_attention

from mediapipe_g4 import static_decode
from mediapipe_g4.atomic import write_json
from mediapipe_g4.diarize import diarize
from mediapipe_g4.engine import AudioPart, EngineRequest, GenerationSettings, TextPart
from mediapipe_g4.memory import (
    GB,
    PREFILL_CHUNK,
    default_batch_size,
    default_context_budget,
    device_memory,
    pick_device,
    pick_dtype,
    shape_from_config,
)
from mediapipe_g4.names import names_prompt
from mediapipe_g4.planner import (
    PlanOptions,
    build_timeline,
    plan_notes,
    plan_transcription,
)
from mediapipe_g4.prompts import transcription_parts
from mediapipe_g4.records import SAMPLE_RATE, Segment, SpeakerTurn, SpeechRegion
from mediapipe_g4.token_count import TokenCounter
from mediapipe_g4.transformers_engine import (
    EngineOptions,
    TransformersEngine,
    _torch_dtype,
)
from mediapipe_g4.vad import detect_speech

TOKENS_PER_SECOND = 2.5 * 1.3  # words a second of speech x Gemma tokens a word
TOKEN_ID_FIELDS = (
    "boi_token_id",
    "eoi_token_id",
    "image_token_id",
    "video_token_id",
    "boa_token_id",
    "eoa_token_index",
    "audio_token_id",
)


# --------------------------------------------------------------------------- model


def fixed_decode(new_tokens: int) -> dict:
    """Greedy decoding of exactly `new_tokens` tokens (random weights would stop anywhere)."""
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }


def twelve_b_config(tiny_config: Any, layers: int = 48) -> Any:
    """The published 12B text shape (DESIGN.md), default audio/vision towers, the tiny processor's token ids.

    `layers` < 48 keeps every layer's shapes and the 5 sliding : 1 global pattern with fewer layers: a rehearsal
    of the 12B's kernels and cache layout on a machine that cannot hold 24 GB of weights."""
    from transformers import (
        Gemma4UnifiedAudioConfig,
        Gemma4UnifiedConfig,
        Gemma4UnifiedTextConfig,
        Gemma4UnifiedVisionConfig,
    )

    tiny_text = tiny_config.get_text_config()
    text = Gemma4UnifiedTextConfig(
        vocab_size=262_144,
        hidden_size=3840,
        intermediate_size=15360,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=256,
        global_head_dim=512,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        sliding_window=1024,
        layer_types=[
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
            for i in range(layers)
        ],
        max_position_embeddings=262_144,
        final_logit_softcapping=30.0,
        pad_token_id=tiny_text.pad_token_id,
        eos_token_id=tiny_text.eos_token_id,
        bos_token_id=tiny_text.bos_token_id,
    )
    ids = {
        k: getattr(tiny_config, k)
        for k in TOKEN_ID_FIELDS
        if getattr(tiny_config, k, None) is not None
    }
    return Gemma4UnifiedConfig(
        text_config=text,
        vision_config=Gemma4UnifiedVisionConfig(),
        audio_config=Gemma4UnifiedAudioConfig(),
        **ids,
    )


def build_model(shape: str, device: str, dtype: str, folder: Path, layers: int = 48):
    """(model, processor, config): random weights, built on `device`; the processor is the tiny one."""
    import torch
    from tiny_model import build_tiny_checkpoint
    from transformers import (
        AutoConfig,
        AutoModelForMultimodalLM,
        AutoProcessor,
        GenerationConfig,
    )

    build_tiny_checkpoint(folder)
    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"
    config = AutoConfig.from_pretrained(folder)
    if shape == "12b":
        config = twelve_b_config(config, layers)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForMultimodalLM.from_config(config, dtype=_torch_dtype(dtype))
    model = model.to(device).eval()
    model.generation_config = GenerationConfig.from_pretrained(folder)
    return model, processor, config


class BenchEngine(TransformersEngine):
    """The project's engine around a model built in memory; decode lengths fixed at max_new_tokens."""

    def __init__(
        self,
        options: EngineOptions,
        model: Any,
        processor: Any,
        config: Any,
        device: str,
        dtype: str,
    ):
        self.options = options
        self.device, self.dtype = device, dtype
        self.config, self.processor, self.model = config, processor, model
        self.shape = shape_from_config(config, "random")
        self.assistant = None
        self.static = None
        self.batch_calls = 0

    def _generate_batch(self, requests: Any, **kwargs: Any) -> list[str]:
        self.batch_calls += 1
        return super()._generate_batch(requests, **kwargs)

    def set_decode(self, mode: str) -> None:
        """`dynamic`: transformers' default cache; `static`: static cache + torch.compile (the engine's path)."""
        if self.static is not None:
            self.static.release()
        self.options = replace(self.options, compile=mode == "static")
        self.static = self._static_decoder()

    def decode_kwargs(self, inputs: dict[str, Any], new_tokens: int) -> dict[str, Any]:
        """The cache/compile arguments the engine passes to generate for this batch."""
        if self.static is None:
            return {}
        batch, length = inputs["input_ids"].shape
        plan = self.static.plan(batch, length, new_tokens, reuse=False)  # timings at this very batch
        if plan is None or plan.batch != batch:
            raise RuntimeError(f"the static path does not take a batch of {batch} x {length} tokens here")
        return self.static.generate_kwargs(plan)

    def fix_decode_length(self, tokens: int) -> None:
        # Random weights may emit <eos> at any step; min_new_tokens suppresses it until `tokens` are made.
        self.model.generation_config.min_new_tokens = tokens

    def to_device(self, inputs: Any) -> dict[str, Any]:
        import torch

        dt = _torch_dtype(self.dtype)
        return {
            k: (
                v.to(self.device, dtype=dt)
                if torch.is_floating_point(v)
                else v.to(self.device)
            )
            if isinstance(v, torch.Tensor)
            else v
            for k, v in inputs.items()
        }


# --------------------------------------------------------------------------- the meeting


def synthetic_meeting(
    minutes: float, seed: int = 0
) -> tuple[list[SpeakerTurn], np.ndarray]:
    """Alternating speakers, 3-20 s turns, 0.2-1.2 s pauses; noise at speech level, quiet in the pauses."""
    rng = np.random.default_rng(seed)
    total = minutes * 60.0
    waveform = (
        rng.standard_normal(int(total * SAMPLE_RATE), dtype=np.float32) * 0.002
    ).astype(np.float32)
    turns, t, speaker = [], 0.3, 0
    while t < total - 1.0:
        end = min(total - 0.2, t + rng.uniform(3.0, 20.0))
        first, last = int(t * SAMPLE_RATE), int(end * SAMPLE_RATE)
        waveform[first:last] = rng.standard_normal(last - first, dtype=np.float32) * 0.1
        turns.append(SpeakerTurn(t, end, f"S{speaker + 1}"))
        speaker = 1 - speaker
        t = end + rng.uniform(0.2, 1.2)
    return turns, waveform


# --------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn, repeat: int = 1) -> float:
    """Seconds per call of `fn` (best of `repeat`), after the device finished what came before."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def peak_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / GB
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    )  # KiB on Linux


_PEAK = [0.0]  # the run's overall peak, kept across resets of the CUDA counter


def reset_peak(device: str) -> None:
    import torch

    _PEAK[0] = max(_PEAK[0], peak_gb(device))
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def is_oom(exc: BaseException) -> bool:
    import torch

    return (
        isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
    )


def reason(exc: BaseException) -> str:
    kind = "out of memory" if is_oom(exc) else type(exc).__name__
    return f"{kind}: {str(exc).splitlines()[0][:160] if str(exc) else ''}".rstrip(": ")


def full_clip_requests(
    waveform: np.ndarray, count: int, max_new: int
) -> list[EngineRequest]:
    settings = GenerationSettings(max_new_tokens=max_new, greedy=True)
    clips = [
        AudioPart(0.0, 30.0, waveform[i * 30 * SAMPLE_RATE :]) for i in range(count)
    ]
    return [
        EngineRequest(
            kind="transcribe",
            parts=transcription_parts(c),
            start=0.0,
            end=30.0,
            settings=settings,
        )
        for c in clips
    ]


def step_clock():
    """A stopping criterion that stops nothing and notes the time and length of every decode step: generate calls
    it once a step, after the step's tokens are chosen (on every decode path: dynamic, static, assisted), and its
    check of whether all rows finished already waits for the device. (last - first time) / (tokens made in
    between) is a token's cost without the prefill, measured within one generate (the difference of two generates
    is noise when a busy machine is timed)."""
    import torch
    from transformers import StoppingCriteria

    class StepClock(StoppingCriteria):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def __call__(self, input_ids, scores, **kwargs):
            self.marks.append((time.perf_counter(), input_ids.shape[1]))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        def per_token(self) -> float:
            (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
            if n1 <= n0:
                raise RuntimeError(f"generate made {len(self.marks)} decode step(s); a token's cost needs two")
            return (t1 - t0) / (n1 - n0)

    return StepClock()


def prefill_and_decode(
    engine: BenchEngine, requests: list[EngineRequest], new_tokens: int, repeat: int
):
    """(prefill s, prompt tokens, decode s/step) for one batch: a forward pass; and the steps of generate with
    `new_tokens`, timed one by one (`step_clock`), best of `repeat`."""
    import torch
    from transformers import StoppingCriteriaList

    model, device = engine.model, engine.device
    inputs = engine.to_device(engine._inputs(requests))
    tokens = int(inputs["attention_mask"].sum())

    def generate(n: int) -> float:
        engine.fix_decode_length(n)
        clock = step_clock()
        model.generate(
            **inputs,
            **{**fixed_decode(n), "max_new_tokens": n},
            **engine.decode_kwargs(inputs, new_tokens),  # one cache size for both
            stopping_criteria=StoppingCriteriaList([clock]),
        )
        return clock.per_token()

    with torch.no_grad():  # as the engine's static path (its caches are reused across calls)
        model(**inputs, logits_to_keep=1)  # warm-up
        prefill = timed(device, lambda: model(**inputs, logits_to_keep=1), repeat)
        generate(new_tokens)  # warm-up (and the compile, on the static path)
        step = min(generate(new_tokens) for _ in range(max(1, repeat)))
    return prefill, tokens, step


def long_prefill(
    model: Any, device: str, tokens: int, chunk: int, variant: str = "sdpa"
) -> tuple[float, float]:
    """(seconds, peak GB) of one text-only prompt of random ids prefilled in chunks, with the long-prefill
    attention `variant` (long_attention.py) and the cache it needs; a compile (flex) is done before the timing."""
    import torch

    text = model.config.get_text_config()
    ids = torch.randint(10, text.vocab_size, (1, tokens), device=device)
    cache = long_attention.prefill_cache(variant, text, tokens)

    def run(upto: int = tokens):
        with torch.inference_mode():
            for start in range(0, upto, chunk):
                end = min(upto, start + chunk)
                model(
                    input_ids=ids[:, start:end],
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                    cache_position=torch.arange(start, end, device=device),
                )

    if long_attention.CACHES[variant] == "static":  # same shapes every chunk: compile once, untimed
        run(min(chunk, tokens))
        with torch.inference_mode():  # the cache's tensors were made in inference mode
            cache.reset()
    reset_peak(device)

    try:
        seconds = timed(device, run)
        return seconds, peak_gb(device)
    finally:
        cache = ids = None
        reset_peak(device)


# Random drafters: hidden and intermediate sizes of the published 26B/31B drafters (the 12B's own config was not
# at hand); heads, head dims and window follow the target, as they must to read its K/V.
DRAFTER_SIZES = {"12b": (1024, 8192), "tiny": (32, 64)}


def make_drafter(engine: BenchEngine, spec: str, shape: str) -> Any:
    """`random`: a drafter with random weights shaped for the target; else a drafter checkpoint (folder or id)."""
    import torch

    from mediapipe_g4.drafter import (
        check_pair,
        load_drafter,
        random_drafter,
        share_kv_with_drafter,
    )

    if spec == "random":
        hidden, intermediate = DRAFTER_SIZES[shape]
        torch.manual_seed(1)
        with torch.device(engine.device):
            drafter = random_drafter(engine.config, hidden=hidden, intermediate=intermediate)
        drafter = drafter.to(engine.device, _torch_dtype(engine.dtype))
    else:
        drafter = load_drafter(spec, dtype=_torch_dtype(engine.dtype), device=engine.device, local_files_only=True)
    check_pair(drafter, engine.config, (spec, "the benchmark model"))
    share_kv_with_drafter(engine.model)
    return drafter


def drafter_cost(engine: BenchEngine, drafter: Any, waveform: np.ndarray, new_tokens: int) -> dict[str, Any]:
    """ms per generated token at batch 1 with and without the drafter, and one draft step's own cost. As for
    `decode_ms_per_step`, the prefill (and the first token it gives) is left out (`step_clock`)."""
    import torch
    from transformers import StoppingCriteriaList

    inputs = engine.to_device(engine._inputs(full_clip_requests(waveform, 1, new_tokens)))
    kwargs = fixed_decode(new_tokens)
    spent: list[float] = []

    def before(*_):
        sync(engine.device)
        spent.append(-time.perf_counter())

    def after(*_):
        sync(engine.device)
        spent[-1] += time.perf_counter()

    def per_token(**extra: Any) -> float:
        clock = step_clock()
        engine.model.generate(**inputs, **kwargs, **extra, stopping_criteria=StoppingCriteriaList([clock]))
        return clock.per_token()

    with torch.inference_mode():
        engine.model.generate(**inputs, assistant_model=drafter, **kwargs)  # warm-up
        plain = per_token()
        assisted = per_token(assistant_model=drafter)
        hooks = [drafter.register_forward_pre_hook(before), drafter.register_forward_hook(after)]
        try:
            engine.model.generate(**inputs, assistant_model=drafter, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
    # Random weights: the target rejects nearly every draft, so assisted decoding here is the drafter's overhead
    # (negative would mean drafting paid off, which random drafts cannot); with real weights each accepted draft
    # saves a target step.
    return {
        "drafter_ms_per_token_plain": plain * 1e3,
        "drafter_ms_per_token_assisted": assisted * 1e3,
        "drafter_overhead_ms_per_token": (assisted - plain) * 1e3,
        "drafter_step_ms": sum(spent) / max(1, len(spent)) * 1e3,
        "drafter_steps_per_token": len(spent) / new_tokens,
    }


# --------------------------------------------------------------------------- stages


def one_token_words(tokenizer: Any) -> list[str]:
    """Words that are one token each, also four in a row (the tiny tokenizer's)."""
    pool = []
    for token_id in range(tokenizer.vocab_size):
        word = tokenizer.decode([token_id]).strip()
        if word.isalpha() and len(tokenizer(" ".join([word] * 4), add_special_tokens=False)["input_ids"]) == 4:
            pool.append(word)
    return pool


def long_notes(engine: BenchEngine, words: list[str], tokens: int, new_tokens: int) -> tuple[float, float, str]:
    """(seconds, peak GB, path) of one text-only notes request of about `tokens` tokens, prompt and answer,
    through the engine (one run: a new shape's compile included); the path says how it was prefilled."""
    text = " ".join(np.random.default_rng(2).choice(words, size=max(1, tokens - new_tokens - 64)))
    request = EngineRequest("notes", (TextPart(text),), settings=GenerationSettings(max_new_tokens=new_tokens,
                                                                                     greedy=True))
    engine.fix_decode_length(new_tokens)
    calls: list[dict[str, Any]] = []
    original = engine.model.generate
    engine.model.generate = lambda **kw: calls.append(kw) or original(**kw)
    try:
        seconds = timed(engine.device, lambda: engine.generate([request]))
    finally:
        del engine.model.generate  # the instance attribute; the class's method again
    if any(c.get("disable_compile") for c in calls):
        path = f"static cache, prefilled in chunks of {engine.options.prefill_chunk}, compiled decoding"
    elif any("compile_config" in c for c in calls):
        path = "static cache, prefilled at once, compiled decoding"
    else:
        path = "dynamic cache" + (", prefilled in chunks" if any(c.get("prefill_chunk_size") for c in calls) else "")
    return seconds, peak_gb(engine.device), path


def synthetic_transcript(turns: list[SpeakerTurn], tokenizer: Any) -> list[Segment]:
    """Lines with as many tokens as real speech has with Gemma's tokenizer (about 2.5 words a second,
    1.3 tokens a word), made of words that are one token each in the tiny tokenizer."""
    pool = one_token_words(tokenizer)
    rng = np.random.default_rng(1)
    return [
        Segment(t.start, t.end, t.speaker,
                " ".join(rng.choice(pool, size=max(1, round(TOKENS_PER_SECOND * (t.end - t.start))))))
        for t in turns
    ]


def names_request(segments: list[Segment], new_tokens: int) -> EngineRequest:
    return EngineRequest(
        kind="names",
        parts=(TextPart(names_prompt(segments)),),
        start=segments[0].start,
        end=segments[-1].end,
        settings=GenerationSettings(max_new_tokens=new_tokens, greedy=True),
    )


def with_answers(requests: Sequence[EngineRequest], length: Callable[[EngineRequest], int]) -> list[EngineRequest]:
    """The planned requests with answers of `length(request)` tokens (the planner's budgets are upper bounds).
    Random weights never stop on their own (<eos> is held back); the engine stops each row at its own length."""
    return [replace(r, settings=replace(r.settings, max_new_tokens=length(r))) for r in requests]


def speech_length(request: EngineRequest) -> int:
    """A transcription answer as long as its clip's speech at a meeting's pace (TOKENS_PER_SECOND), so a batch
    decodes for its longest clip, as it does with real weights."""
    return max(1, math.ceil(TOKENS_PER_SECOND * request.audio_seconds))


def run_stages(
    engine: BenchEngine,
    mode: str,
    stages: dict[str, tuple[list[EngineRequest], int]],
    audio_s: float,
    diarize_s: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Wall time of each stage's requests through the engine: a first (cold: compiles) and a second run."""
    engine.set_decode(mode)
    out: dict[str, Any] = {}
    total = diarize_s
    for stage, (group, new_tokens) in stages.items():
        engine.fix_decode_length(new_tokens)
        reset_peak(engine.device)
        static_before = engine.static.batches if engine.static else 0
        calls_before = engine.batch_calls
        try:
            run = partial(engine.generate, group)
            first = timed(engine.device, run)  # compiles the shapes it needs, on the static path
            wall = timed(engine.device, run)
        except Exception as exc:
            if not is_oom(exc):
                raise
            out[f"{stage}_wall_s_{mode}"] = reason(exc)
            total = float("nan")
            continue
        out[f"{stage}_batches_{mode}"] = (engine.batch_calls - calls_before) / 2  # per run
        if mode == "static":
            if engine.static is None:  # the engine logged why and decoded the rest without compiling
                out[f"{stage}_wall_s_{mode}"] = "torch.compile failed, the engine fell back to the dynamic cache"
                out[f"pipeline_wall_s_{mode}"] = "see the stages"
                return out
            # Batches too big for a static cache in free memory take the dynamic path: say how many did not.
            out[f"{stage}_static_batches_{mode}"] = (engine.static.batches - static_before) / 2
        out[f"{stage}_first_s_{mode}"] = first
        out[f"{stage}_wall_s_{mode}"] = wall
        out[f"{stage}_rtf_{mode}"] = wall / audio_s  # real-time factor: < 1 is faster than real time
        out[f"{stage}_speed_x_{mode}"] = audio_s / wall  # seconds of audio per wall second
        out[f"{stage}_peak_gb_{mode}"] = peak_gb(engine.device)
        total += wall
    if mode == "static":  # each costs a trace per process (a compile, the first time ever)
        out["static_shapes_compiled"] = len(engine.static.compiled)
    out[f"pipeline_wall_s_{mode}"] = total  # diarization + the model stages, warm
    out[f"pipeline_rtf_{mode}"] = total / audio_s
    out[f"pipeline_speed_x_{mode}"] = audio_s / total
    return out


@contextlib.contextmanager
def compile_watch(mode: str, figures: dict[str, Any], info: dict[str, Any]) -> Iterator[None]:
    """What torch.compile did inside the block, into the figures: graph breaks (each splits a decode step into
    graphs with eager code between them), graphs traced, and the compiled graphs that did not get CUDA graphs
    (inductor then launches every kernel of every step from Python: the launch-bound decoding the static path
    is there to avoid); the reasons into `info`. On the CPU there are no CUDA graphs, so no skips."""
    from torch._dynamo.utils import counters
    from torch._inductor import cudagraph_utils

    skips: list[str] = []

    class Skips(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            skips.append(record.getMessage())

    handler = Skips(level=logging.WARNING)
    cudagraph_utils.cudagraphs_log.addHandler(handler)
    counters.clear()
    try:
        yield
    finally:
        cudagraph_utils.cudagraphs_log.removeHandler(handler)
        breaks = counters["graph_break"]
        figures[f"compile_graph_breaks_{mode}"] = sum(breaks.values())
        figures[f"compile_graphs_{mode}"] = counters["stats"]["unique_graphs"]
        figures[f"cudagraph_skips_{mode}"] = counters["inductor"]["cudagraph_skips"]
        if breaks:
            info[f"graph_break_reasons_{mode}"] = [text.split("\n", 1)[0] for text, _ in breaks.most_common(5)]
        if skips:
            info[f"cudagraph_skip_reasons_{mode}"] = list(dict.fromkeys(skips))[:5]


def prefill_decode_figures(
    engine: BenchEngine, mode: str, waveform: np.ndarray, batch: int, args: argparse.Namespace,
    notes: Sequence[EngineRequest] = (),
) -> dict[str, Any]:
    """Prefill tokens/s and decode ms/step on full 30 s requests, at batch 1 and at the batch used, and on the
    meeting's notes request (batch 1, a cache of the notes' length)."""
    engine.set_decode(mode)
    engine.fix_decode_length(args.max_new_tokens)
    out: dict[str, Any] = {}
    full = full_clip_requests(waveform, batch, args.max_new_tokens)
    groups = [("batch1", full[:1]), (f"batch{batch}", full)] + [("notes", list(notes[:1]))] * bool(notes)
    for label, group in groups:
        try:
            prefill, tokens, step = prefill_and_decode(
                engine, group, args.max_new_tokens, args.repeat
            )
            out[f"prefill_tokens_per_s_{label}"] = tokens / prefill
            out[f"decode_ms_per_step_{label}_{mode}"] = step * 1e3
        except Exception as exc:
            if not is_oom(exc) and not isinstance(exc, RuntimeError):
                raise
            out[f"decode_ms_per_step_{label}_{mode}"] = reason(exc)
        reset_peak(engine.device)
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=("12b", "tiny"), default="12b")
    p.add_argument(
        "--layers",
        type=int,
        default=48,
        help="--shape 12b with fewer layers (every layer's shapes kept, 5 sliding : 1 global): to rehearse the "
        "12B's kernels on a small machine; figures are then not the 12B's",
    )
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: memory.default_batch_size",
    )
    p.add_argument(
        "--answer-lengths",
        choices=("speech", "fixed"),
        default="speech",
        help="transcription answers in the stages: speech (each as long as its clip's speech at "
        f"{TOKENS_PER_SECOND:g} tokens a second, a meeting's pace) or fixed (all --max-new-tokens)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        help="decode length of the decode ms/step and drafter figures (and of every transcription answer with "
        "--answer-lengths fixed)",
    )
    p.add_argument("--names-new-tokens", type=int, default=200)
    p.add_argument("--notes-new-tokens", type=int, default=1024)
    p.add_argument("--no-notes", action="store_true", help="time transcription only")
    p.add_argument(
        "--decode",
        default="dynamic,static",
        help="decode modes to time: dynamic (transformers' default cache), static (static cache + "
        "torch.compile, the engine's default on CUDA)",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend for --decode static (eager: trace only, for the smoke run)",
    )
    p.add_argument(
        "--long",
        default="32768,131072,262144",
        help="long-prefill token counts, comma-separated",
    )
    p.add_argument(
        "--chunk", type=int, default=PREFILL_CHUNK, help="long-prefill chunk (tokens)"
    )
    p.add_argument(
        "--long-attention",
        default="sdpa,lower-right,flex",
        help="attention of the global layers in the long prefills (long_attention.py): sdpa (transformers' "
        "default, a dense chunk x context mask), lower-right (sdpa with a lower-right causal bias), flex "
        "(compiled flex attention over a static K/V buffer, small Triton blocks for head dim 512)",
    )
    p.add_argument(
        "--assistant",
        default="random",
        help="MTP drafter to time speculative decoding with: random (random weights shaped for the model, "
        "the default), a drafter folder, or none",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument(
        "--repeat", type=int, default=3, help="best-of for the prefill timings"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="--shape tiny --minutes 2 --long 2048 --max-new-tokens 8, names/notes 8, "
        "--compile-backend eager, CPU",
    )
    p.add_argument(
        "--parts",
        default="stages,long,notes-long,drafter",
        help="what to time: stages (diarization, the model stages, prefill and decode per --decode mode), "
        "long (the long prefills per attention variant), notes-long (a notes request of each --long length "
        "through the engine's static path), drafter; split a GPU run into commands that each fit a time limit",
    )
    p.add_argument("--static-free-gb", type=float, default=None,
                   help="the free memory the static path plans with (default: the device's): e.g. what a 40 GB card "
                   "would leave, so that long notes prefill in chunks into the static cache on a bigger one")
    p.add_argument("--json", default=None, help="write the figures here (after every part, so a run cut short keeps them)")
    args = p.parse_args(argv)
    if args.smoke:
        args.shape, args.minutes, args.long, args.max_new_tokens = (
            "tiny",
            2.0,
            "2048",
            8,
        )
        args.device, args.chunk, args.repeat = args.device or "cpu", 1024, 1
        args.names_new_tokens = args.notes_new_tokens = 8
        args.compile_backend = "eager"
    if args.layers < 1 or (args.layers != 48 and args.shape != "12b"):
        p.error("--layers takes a positive count, with --shape 12b")
    static_decode.COMPILE_BACKEND = args.compile_backend
    if args.static_free_gb is not None:
        static_decode.free_memory = lambda device: args.static_free_gb * 2**30

    import torch

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, processor, config = build_model(
            args.shape, device, dtype, Path(tmp) / "tiny", args.layers
        )
    build_s = time.perf_counter() - t_start
    params = sum(p.numel() for p in model.parameters())
    shape = shape_from_config(config, f"gemma4-{args.shape}-random", params=params)
    memory = device_memory(device)
    counter = TokenCounter(processor)
    options = PlanOptions()

    turns, waveform = synthetic_meeting(args.minutes)
    requests = with_answers(plan_transcription(turns, waveform, options=options, counter=counter),
                            speech_length if args.answer_lengths == "speech" else lambda r: args.max_new_tokens)
    answers = [r.settings.max_new_tokens for r in requests]
    budget, warning = default_context_budget(shape, memory, dtype=dtype)
    segments = synthetic_transcript(turns, processor.tokenizer)
    notes = plan_notes(build_timeline(segments), budget, options, counter)
    longest = max(r.tokens for r in requests) + max(answers)
    batch = args.batch_size or default_batch_size(shape, memory, longest, dtype=dtype)
    engine = BenchEngine(
        EngineOptions(model="random", device=device, dtype=dtype, batch_size=batch),
        model,
        processor,
        config,
        device,
        dtype,
    )
    audio_s = sum(r.audio_seconds for r in requests)

    info: dict[str, Any] = {
        "device": f"{device} ({memory.name})",
        "dtype": dtype,
        "shape": args.shape,
        "layers": config.get_text_config().num_hidden_layers,
        "params_b": params / 1e9,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "minutes": args.minutes,
        "turns": len(turns),
        "speech_s": audio_s,
        "transcription_requests": len(requests),
        "batch_size": batch,
        "answer_lengths": args.answer_lengths,
        "transcribe_answer_tokens": sum(answers),
        "transcribe_answer_tokens_max": max(answers),
        "max_new_tokens": args.max_new_tokens,
        "notes_budget_tokens": budget,
        "notes_requests": len(notes),
        "notes_tokens": sum(r.tokens for r in notes),
        "names_tokens": counter.template_tokens(names_request(segments, args.names_new_tokens)),
        "notes_new_tokens": 0 if args.no_notes else args.notes_new_tokens,
        "names_new_tokens": 0 if args.no_notes else args.names_new_tokens,
        "budget_warning": warning,
        "static_free_gb": args.static_free_gb,
        "build_s": build_s,
    }
    figures: dict[str, Any] = {}
    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if unknown := parts - {"stages", "long", "notes-long", "drafter"}:
        p.error(f"unknown --parts {', '.join(sorted(unknown))}")

    def done(part: str) -> None:
        """Progress on stderr, and the figures so far on disk (a run cut short by a time limit keeps them)."""
        print(f"[{time.perf_counter() - t_start:7.1f} s] {part} done", file=sys.stderr, flush=True)
        if args.json:  # atomically: a run killed at its time limit must not leave half a file
            write_json(args.json, {"info": info, "figures": figures})

    # Diarization of the meeting's audio on the CPU side, then every model stage through the engine, with each
    # decode mode. Silero VAD hears no speech in the synthetic noise, and diarization would stop there: the VAD is
    # timed over the whole waveform (its cost is the audio's length), then the voice embeddings and clustering
    # over the turns' regions, as for a meeting where everyone talks (the work is real, the answer is not).
    if "stages" in parts:
        t0 = time.perf_counter()
        detect_speech(waveform)
        figures["diarize_vad_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        speakers = diarize(waveform, num_speakers=2, regions=tuple(SpeechRegion(t.start, t.end) for t in turns))
        figures["diarize_embed_cluster_s"] = time.perf_counter() - t0
        figures["diarize_s"] = figures["diarize_vad_s"] + figures["diarize_embed_cluster_s"]
        info["diarize_turns"] = len(speakers.turns)
        stages = {"transcribe": (requests, max(answers))}
        if not args.no_notes:
            stages["names"] = ([names_request(segments, args.names_new_tokens)], args.names_new_tokens)
            stages["notes"] = (with_answers(notes, lambda r: args.notes_new_tokens), args.notes_new_tokens)
        for mode in args.decode.split(","):
            with compile_watch(mode, figures, info) if mode == "static" else contextlib.nullcontext():
                figures.update(run_stages(engine, mode, stages, audio_s, figures["diarize_s"], args))
                figures.update(prefill_decode_figures(engine, mode, waveform, batch, args,
                                                      stages.get("notes", ([],))[0]))
            engine.set_decode("dynamic")  # frees the static cache before the long prefills
            done(f"stages ({mode})")

    # Long notes prefill: text only, in chunks; per attention variant (long_attention.py).
    for attention in args.long_attention.split(",") if "long" in parts else ():
        suffix = "" if attention == "sdpa" else f"_{attention}"
        model.set_attn_implementation({"text_config": long_attention.register(attention)})
        for tokens in (int(x) for x in args.long.split(",") if x.strip()):
            try:
                seconds, peak = long_prefill(model, device, tokens, args.chunk, attention)
                figures[f"long_prefill_{tokens}_s{suffix}"] = seconds
                figures[f"long_prefill_{tokens}_tokens_per_s{suffix}"] = tokens / seconds
                figures[f"long_prefill_{tokens}_peak_gb{suffix}"] = peak
            except Exception as exc:
                if not is_oom(exc) and not isinstance(
                    exc, (RuntimeError, IndexError, ValueError)
                ):
                    raise
                figures[f"long_prefill_{tokens}_s{suffix}"] = reason(exc)
                reset_peak(device)
            if attention == "flex":
                info["flex_kernel_options"] = str(long_attention.FLEX.options)
            done(f"long prefill {tokens} ({attention})")
    model.set_attn_implementation({"text_config": "sdpa"})

    # The same lengths as one notes request through the engine, as `summarize` runs it: the static path
    # (prefilled at once, or in chunks when that does not fit) and compiled decoding, or the dynamic cache.
    if "notes-long" in parts:
        engine.options = replace(engine.options, prefill_chunk=args.chunk)
        engine.set_decode("static")
        words = one_token_words(processor.tokenizer)
        with compile_watch("long_notes", figures, info):
            for tokens in (int(x) for x in args.long.split(",") if x.strip()):
                name = f"long_notes_{tokens}"
                try:
                    figures[f"{name}_s"], figures[f"{name}_peak_gb"], info[f"{name}_path"] = long_notes(
                        engine, words, tokens, args.max_new_tokens)
                except Exception as exc:
                    if not is_oom(exc) and not isinstance(exc, RuntimeError):
                        raise
                    figures[f"{name}_s"] = reason(exc)
                reset_peak(device)
                done(f"long notes {tokens}")
        engine.set_decode("dynamic")

    if "drafter" in parts and args.assistant == "none":
        figures["drafter_overhead_ms_per_token"] = "skipped: no drafter"
    elif "drafter" in parts:
        try:
            drafter = make_drafter(engine, args.assistant, args.shape)
            figures.update(drafter_cost(engine, drafter, waveform, args.max_new_tokens))
        except Exception as exc:  # noqa: BLE001
            figures["drafter_overhead_ms_per_token"] = reason(exc)
    reset_peak(device)
    figures["peak_gb"] = _PEAK[0]
    done("all")

    print_table(info, figures)
    return 0


def print_table(info: dict[str, Any], figures: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    rows = (
        [(k, fmt(v)) for k, v in info.items() if v is not None]
        + [("", "")]
        + [(k, fmt(v)) for k, v in figures.items()]
    )
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}" if k else "-" * (width + 12))


if __name__ == "__main__":
    raise SystemExit(main())
