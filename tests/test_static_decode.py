"""Decoding with a static cache and torch.compile (static_decode.py) on the tiny checkpoint, on the CPU:
the same greedy answers as the dynamic cache, padded batches trimmed, the memory check, and the fall back
to plain decoding when compiling fails. Prompts are far longer than the tiny model's sliding window (16), so
the sliding layers' rings wrap many times."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from conftest import image_cut, slides_request

from mediapipe_g4 import static_decode
from mediapipe_g4.engine import AudioPart, EngineRequest, GenerationSettings
from mediapipe_g4.memory import prefill_workspace
from mediapipe_g4.prompts import transcription_parts
from mediapipe_g4.records import SAMPLE_RATE
from mediapipe_g4.static_decode import batch_bucket, length_bucket, static_cache
from mediapipe_g4.transformers_engine import EngineOptions, TransformersEngine


def test_buckets():
    assert [length_bucket(n) for n in (1, 1024, 1025, 1536, 1537, 2049, 5000, 7000)] == \
        [1024, 1024, 1536, 1536, 2048, 3072, 6144, 8192]
    assert [batch_bucket(n) for n in (1, 2, 3, 5, 60)] == [1, 2, 4, 8, 64]
    assert batch_bucket(3, largest=4) == 4 and batch_bucket(5, largest=6) == 6 and batch_bucket(7, largest=6) == 7


def _ids(batch=3, length=40, padding=(0, 7, 30), seed=0):
    """Token ids, left-padded per row: rows with `padding` pad tokens (0 ones: no padding)."""
    import torch

    ids = torch.randint(10, 200, (batch, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(padding):
        mask[row, :pad] = 0
    return ids * mask, mask


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # boolean and additive masks
@pytest.mark.parametrize("prompt", [40, 10])  # longer and shorter than the window of 16
def test_ring_cache_decodes_past_the_window_as_the_dynamic_cache(tiny_checkpoint, attention, prompt):
    """The sliding layers keep only the window, in slots p % 16; 25 steps wrap the ring more than once, with left
    padding (2-D mask) and without (no mask: generate passes none), compiled once for all the steps."""
    import torch
    from torch._dynamo.utils import counters
    from transformers import AutoModelForMultimodalLM, CompileConfig

    model = AutoModelForMultimodalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32,
                                                     attn_implementation=attention).eval()
    static_decode.static_step_masks(model)
    cache = static_cache(model.config.get_text_config(decoder=True), 128)
    config = CompileConfig(fullgraph=False, dynamic=False, backend="eager")
    config._compile_all_devices = True
    for padding in ((0, 7, 30), (0, 0, 0)):
        ids, mask = _ids(length=prompt, padding=[min(p, prompt - 1) for p in padding])
        expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=25, do_sample=False)
        cache.reset()
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=25, do_sample=False,
                                          past_key_values=cache), expected)
        torch._dynamo.reset()
        counters.clear()
        cache.reset()
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=25, do_sample=False,
                                          past_key_values=cache, compile_config=config), expected)
        assert counters["stats"]["unique_graphs"] == 1  # one graph for 24 steps: nothing in it is a Python int
    sliding = [layer for layer in cache.layers if layer.is_sliding]
    assert sliding and all(layer.keys.shape[-2] == 16 for layer in sliding)  # the window, not the 128 tokens


def test_prompts_of_other_lengths_reuse_the_compiled_step(tiny_checkpoint):
    """The prefill's Python counts (`length`) change per request; the compiled step must not depend on them."""
    import torch
    from torch._dynamo.utils import counters
    from transformers import AutoModelForMultimodalLM, CompileConfig

    model = AutoModelForMultimodalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    static_decode.static_step_masks(model)
    cache = static_cache(model.config.get_text_config(decoder=True), 128)
    config = CompileConfig(fullgraph=False, dynamic=False, backend="eager")
    config._compile_all_devices = True
    torch._dynamo.reset()
    counters.clear()
    for length in (40, 33, 50, 10):
        ids, mask = _ids(batch=2, length=length, padding=(0, 3))
        cache.reset()
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, past_key_values=cache,
                       compile_config=config)
    assert counters["stats"]["unique_graphs"] == 1


def test_the_prefill_attends_to_the_prompt_and_the_steps_to_the_cache(tiny_checkpoint):
    """The prefill's masks (and keys) are the prompt's length, not the cache's; a step's are the global layers'
    whole cache and the sliding layers' window."""
    import torch
    from transformers import AutoModelForMultimodalLM

    model = AutoModelForMultimodalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    static_decode.static_step_masks(model)
    made, original = [], model.create_masks_for_generate

    def spy(*args, **kwargs):
        masks = original(*args, **kwargs)
        made.append({kind: tuple(mask.shape[-2:]) for kind, mask in masks.items()})
        return masks

    model.create_masks_for_generate = spy
    ids, mask = _ids()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                   past_key_values=static_cache(model.config.get_text_config(decoder=True), 1024))
    assert made == [{"sliding_attention": (40, 40), "full_attention": (40, 40)}] + \
        [{"sliding_attention": (1, 16), "full_attention": (1, 1024)}] * 2


def test_the_static_cache_is_as_large_as_the_dynamic_one(tiny_checkpoint):
    """What the memory check counts (ModelShape.kv_bytes: sliding layers capped at the window) is what is held."""
    import torch
    from transformers import AutoModelForMultimodalLM

    from mediapipe_g4.memory import shape_from_config

    model = AutoModelForMultimodalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    static_decode.static_step_masks(model)
    cache = static_cache(model.config.get_text_config(decoder=True), 1024)
    ids, mask = _ids()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False, past_key_values=cache)
    held = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers if layer.is_initialized) * 4
    assert held == shape_from_config(model.config, "tiny").kv_bytes(1024, 4, batch=3)


def _requests(seconds=(3.0, 7.5, 12.0, 4.0, 9.0, 2.0, 6.0), new_tokens=(12, 5, 12, 8, 12, 3, 9)):
    """Clips with answer budgets of their own (a batch stops each row at its budget)."""
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(SAMPLE_RATE * 13) * 0.1).astype(np.float32)
    return [EngineRequest("transcribe", transcription_parts(AudioPart(0.0, s, wave[: int(s * SAMPLE_RATE)])),
                          start=float(i), end=float(i) + s, settings=GenerationSettings(max_new_tokens=n, greedy=True))
            for i, (s, n) in enumerate(zip(seconds, new_tokens, strict=True))]


@pytest.fixture(autouse=True)
def compile_cache(tmp_path_factory, monkeypatch):
    """Compiled kernels go to a test folder, not the user's cache."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "torch-compile"))


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    return TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", batch_size=4, compile=False))


@pytest.fixture
def eager_backend(monkeypatch):
    monkeypatch.setattr(static_decode, "COMPILE_BACKEND", "eager")


def _spy_generate(engine):
    calls = []
    original = engine.model.generate

    def spy(**kw):
        calls.append({"batch": kw["input_ids"].shape[0], "static": "compile_config" in kw,
                      "cache": type(kw.get("past_key_values")).__name__})
        return original(**kw)

    engine.model.generate = spy
    return calls


def test_static_decoding_gives_the_dynamic_answers(tiny_checkpoint, plain, eager_backend):
    assert plain.static is None  # off on the CPU unless asked for
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", batch_size=4, compile=True))
    calls = _spy_generate(fast)
    requests = _requests()
    expected = plain.generate(requests)
    assert fast.generate(requests) == expected
    # 7 requests at 4 a batch: 4, then 3 padded to 4 with a copy; the padding's answer is dropped.
    assert [c["batch"] for c in calls] == [4, 4] and all(c["static"] and c["cache"] == "StaticCache" for c in calls)
    assert fast.static._cache_key == (4, 1024)
    assert fast.generate(requests[:1]) == expected[:1]  # on the shape compiled already, padded with copies
    assert fast.static._cache_key == (4, 1024) and fast.static._compiled == {(4, 1024)}


def test_the_compiled_step_attends_on_the_shared_heads_without_copying_the_cache(tiny_checkpoint, plain, eager_backend,
                                                                                 monkeypatch):
    """Compiled, transformers' sdpa copied the whole static cache once per query head at every decoding step
    (`repeat_kv`; the 12B's global layers: 16 copies of a cache up to 262 k tokens long); the step now folds the
    query heads onto their shared key/value head, as the uncompiled step does: the same answers, no copy."""
    import torch
    from transformers.integrations import sdpa_attention

    copies = []
    real = sdpa_attention.repeat_kv

    def spy(hidden, n_rep):
        copies.append((tuple(hidden.shape), torch.compiler.is_compiling()))
        return real(hidden, n_rep)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", spy)
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", batch_size=4, compile=True))
    requests = _requests()[:3]
    assert fast.generate(requests) == plain.generate(requests)
    assert fast.static is not None and fast.static.batches >= 1
    assert [shape for shape, compiling in copies if compiling and shape[2] >= 1024] == []  # none of the cache


def test_static_decoding_of_the_e2b_family_gives_its_dynamic_answers(tiny_e2b_checkpoint, eager_backend):
    """E2B/E4B: layers that reuse earlier layers' K/V, per-layer inputs, their own audio tower; audio requests."""
    plain_e2b = TransformersEngine(EngineOptions(model=str(tiny_e2b_checkpoint), device="cpu", batch_size=4,
                                                 compile=False))
    fast = TransformersEngine(EngineOptions(model=str(tiny_e2b_checkpoint), device="cpu", batch_size=4, compile=True))
    calls = _spy_generate(fast)
    requests = _requests()
    assert fast.generate(requests) == plain_e2b.generate(requests)
    assert [c["batch"] for c in calls] == [4, 4] and all(c["static"] and c["cache"] == "StaticCache" for c in calls)


def test_the_first_compile_of_a_gpu_run_is_said(tiny_checkpoint, caplog):
    """On a GPU the progress bar stands still while the decoder compiles: the first shape is a warning (shown
    without -v), later ones and the CPU's are info."""
    import torch
    from transformers import AutoModelForMultimodalLM

    from mediapipe_g4.memory import shape_from_config

    model = AutoModelForMultimodalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    levels = {}
    for device in ("cuda", "cpu"):
        decoder = static_decode.StaticDecoder(model, shape_from_config(model.config, "tiny"), device, "float32")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mediapipe_g4"):
            for static in (static_decode.StaticBatch(1, 1024), static_decode.StaticBatch(1, 1024),
                           static_decode.StaticBatch(4, 1024)):
                decoder.generate_kwargs(static)
        levels[device] = [r.levelname for r in caplog.records if "compiling the decoder" in r.getMessage()]
    assert levels == {"cuda": ["WARNING", "INFO"], "cpu": ["INFO", "INFO"]}


def test_a_drafter_beside_static_decoding(tiny_checkpoint, tiny_drafter, plain, eager_backend, monkeypatch):
    """The drafter marks target layers to hand over their K/V; batches still compile and decode the same.
    A single request takes the compiled static path when it fits (faster than drafting on the dynamic cache,
    the only cache transformers drafts on) and drafts when it does not, to the same answers."""
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", batch_size=4, compile=True,
                                            assistant=str(tiny_drafter)))
    calls = _spy_generate(fast)
    drafts = []
    fast.assistant.register_forward_hook(lambda *_: drafts.append(1))
    requests = _requests()
    assert fast.generate(requests) == plain.generate(requests)
    assert fast.generate(requests[:1]) == plain.generate(requests[:1])
    assert [c["static"] for c in calls] == [True, True, True] and not drafts
    monkeypatch.setattr(static_decode, "free_memory", lambda device: 1e6)  # no static cache fits now
    assert fast.generate(requests[1:2]) == plain.generate(requests[1:2])
    assert calls[-1] == {"batch": 1, "static": False, "cache": "NoneType"} and drafts


def test_compiled_kernels_are_kept_in_the_work_cache(tiny_checkpoint, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("G4MEDIA_CACHE", str(tmp_path))
    TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torch-compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")  # the user's choice wins
    TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"


def test_batches_that_do_not_fit_decode_with_the_dynamic_cache(tiny_checkpoint, plain, eager_backend, monkeypatch):
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    monkeypatch.setattr(static_decode, "free_memory", lambda device: 1e6)  # 1 MB free
    calls = _spy_generate(fast)
    requests = _requests()[:3]
    assert fast.generate(requests) == plain.generate(requests)
    assert calls == [{"batch": 3, "static": False, "cache": "NoneType"}]


def test_a_failed_compile_falls_back_to_plain_decoding(tiny_checkpoint, plain, monkeypatch, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler for this")

    monkeypatch.setattr(static_decode, "COMPILE_BACKEND", broken_backend)
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    requests = _requests()[:2]
    with caplog.at_level(logging.WARNING, logger="mediapipe_g4"):
        assert fast.generate(requests) == plain.generate(requests)
    assert fast.static is None
    assert "decoding with torch.compile failed" in caplog.text and "no compiler for this" in caplog.text


def test_the_cache_held_is_counted_once(tiny_checkpoint, monkeypatch):
    """Reusing the cache it holds needs only the prefill's memory; a new shape may use the held cache's room."""
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    decoder, shape = fast.static, fast.static.shape
    held = shape.kv_bytes(1024, 4, batch=4)

    def free(prefill):
        monkeypatch.setattr(static_decode, "free_memory", lambda device: (prefill + held / 2) / static_decode.HEADROOM)

    free(prefill_workspace(shape, 500, 500, "float32", batch=4))
    assert decoder.plan(4, 500, 100) is None  # a new 4 x 1024 cache does not fit
    decoder._cache_key = (4, 1024)  # once held, it is reused: only the prefill needs room
    assert decoder.plan(4, 500, 100) == decoder.plan(3, 500, 100) == static_decode.StaticBatch(4, 1024)

    free(prefill_workspace(shape, 100, 100, "float32", batch=1))
    decoder._cache_key = None
    assert decoder.plan(1, 100, 2900) is None  # 1 x 3072 is 3/4 of the held cache's size
    decoder._cache_key = (4, 1024)  # ... and fits in its place (1 x 8192, reserved for a batch of one, does not)
    assert decoder.plan(1, 100, 2900) == static_decode.StaticBatch(1, 3072)


def test_a_compiled_shape_serves_batches_up_to_four_times_narrower_and_half_as_long(tiny_checkpoint):
    """Tracing a new shape costs seconds per process (more for a 48-layer model than padding a few rows)."""
    decoder = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True)).static
    assert decoder.plan(3, 500, 100) == static_decode.StaticBatch(4, 1024)  # nothing compiled: its own bucket
    decoder._compiled = {(16, 2048), (8, 4096)}
    assert decoder.plan(4, 500, 100) == static_decode.StaticBatch(16, 2048)
    assert decoder.plan(7, 500, 100) == static_decode.StaticBatch(16, 2048)  # 8 x 4096 is more than twice as long
    assert decoder.plan(2, 500, 100) == static_decode.StaticBatch(2, 1024)  # 16 is more than 4 x 2 wide
    assert decoder.plan(8, 2500, 400) == static_decode.StaticBatch(8, 4096)  # 3072 needed; the least work
    assert decoder.plan(8, 500, 100, reuse=False) == static_decode.StaticBatch(8, 1024)
    decoder._compiled.add((8, 2048))
    assert decoder.plan(7, 500, 100) == static_decode.StaticBatch(8, 2048)  # the least work of those that serve


def test_a_batch_of_one_compiles_a_shape_four_times_as_long(tiny_checkpoint):
    """The names then the notes (the same prompt, 400 then 4096 answer tokens), each a batch of one: one
    compiled shape for both."""
    decoder = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True)).static
    assert decoder.plan(1, 1000, 400) == static_decode.StaticBatch(1, 6144)  # 1536 needed
    assert decoder.plan(2, 1000, 400) == static_decode.StaticBatch(2, 1536)  # wider batches: their own length
    assert decoder.plan(1, 1000, 400, reuse=False) == static_decode.StaticBatch(1, 1536)
    assert decoder.plan(1, 3000, 400) == static_decode.StaticBatch(1, 8192)  # 4 x 4096, cut to the whole context
    decoder._compiled.add((1, 6144))
    assert decoder.plan(1, 1000, 4096) == static_decode.StaticBatch(1, 6144)  # the notes: the same shape


def test_batches_shrink_to_what_the_static_path_fits(tiny_checkpoint, plain, eager_backend, monkeypatch):
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    requests = _requests()[:4]
    length = fast._inputs(requests)["input_ids"].shape[1]
    need = {b: fast.static.shape.kv_bytes(1024, 4, batch=b)
            + prefill_workspace(fast.static.shape, length, length, "float32", batch=b) for b in (2, 4)}
    monkeypatch.setattr(static_decode, "free_memory", lambda device: (need[2] + need[4]) / 2 / static_decode.HEADROOM)
    calls = _spy_generate(fast)
    assert fast.generate(requests) == plain.generate(requests)
    assert [(c["batch"], c["static"]) for c in calls] == [(2, True), (2, True)]


def test_a_prompt_whose_prefill_does_not_fit_at_once_prefills_in_chunks(tiny_checkpoint, plain, eager_backend,
                                                                         monkeypatch):
    """A long notes prompt on a GPU with too little memory for its one-shot prefill: prefilled in chunks into the
    static cache without compiling, then decoded compiled, to the dynamic path's answer."""
    from mediapipe_g4.engine import TextPart

    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True, prefill_chunk=64))
    text = " ".join(f"Line {i}: the payment service." for i in range(40))
    request = EngineRequest("notes", (TextPart(text), TextPart("Summarize.")),
                            settings=GenerationSettings(max_new_tokens=20, greedy=True))
    length, shape = fast._inputs([request])["input_ids"].shape[1], fast.static.shape
    caches = [shape.kv_bytes(n, 4) for n in (length_bucket(length + 20), 2 * length_bucket(length + 20))]
    chunked = max(caches) + prefill_workspace(shape, 64, length, "float32")
    at_once = min(caches) + prefill_workspace(shape, length, length, "float32")
    assert length > 64 and chunked < at_once
    monkeypatch.setattr(static_decode, "free_memory", lambda device: (chunked + at_once) / 2 / static_decode.HEADROOM)
    calls = []
    original = fast.model.generate
    fast.model.generate = lambda **kw: calls.append((kw["input_ids"].shape[1], kw.get("prefill_chunk_size"),
                                                     "compile_config" in kw)) or original(**kw)
    assert fast.generate([request]) == plain.generate([request])
    assert calls == [(length - 1, 64, False), (length, None, True)]  # the chunks, then from the cache, compiled


def test_a_long_prompt_with_slides_prefills_in_chunks_that_do_not_cut_them(tiny_checkpoint, plain, eager_backend,
                                                                           monkeypatch, tmp_path):
    """The static path's chunks (all but the prompt's last token) keep each slide whole, as the dynamic path's:
    the answer is the one-shot prefill's."""
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True, prefill_chunk=200))
    request = slides_request(tmp_path)
    types = fast._inputs([request])["mm_token_type_ids"]
    assert image_cut(types[:, :-1], 200)
    monkeypatch.setattr(fast.static, "_fits", lambda shape, prompt, chunk: chunk < prompt)  # only chunks fit
    calls = []
    original = fast.model.generate
    fast.model.generate = lambda **kw: calls.append((kw.get("prefill_chunk_size"), "compile_config" in kw,
                                                     type(kw["past_key_values"]).__name__)) or original(**kw)
    assert fast.generate([request]) == plain.generate([request])
    (size, compiled, cache), rest = calls[0], calls[1:]
    assert rest == [(None, True, "StaticCache")] and not compiled and cache == "StaticCache"  # chunks, then compiled
    assert 100 <= size < 200 and not image_cut(types[:, :-1], size)


@pytest.mark.parametrize("chunk", [7, 64])  # chunks shorter and longer than the window; the slide spans chunks
def test_chunks_into_the_ring_cache_as_into_transformers_static_cache(tiny_checkpoint, plain, tmp_path, chunk):
    """With a slide, chunked prefill follows transformers' own static-cache masks (a slide's tokens in one chunk
    cannot see its tokens in the next; its forward with a dynamic cache composes that mask a little differently):
    the same logits as transformers' StaticCache, whose sliding layers shift instead of ringing."""
    import torch
    from PIL import Image
    from transformers import AutoModelForMultimodalLM, StaticCache

    from mediapipe_g4.engine import ImagePart, TextPart

    Image.new("RGB", (320, 240), (200, 40, 40)).save(tmp_path / "slide.png")
    text = " ".join(f"Line {i}: the payment service." for i in range(40))
    request = EngineRequest("notes", (TextPart(text), ImagePart(str(tmp_path / "slide.png")), TextPart("Summarize.")),
                            image_tokens=70)
    model = AutoModelForMultimodalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    static_decode.static_step_masks(model)
    inputs = plain._inputs([request])
    config = model.config.get_text_config(decoder=True)
    runs = [model.generate(**inputs, max_new_tokens=6, do_sample=False, output_scores=True,
                           return_dict_in_generate=True, prefill_chunk_size=chunk, disable_compile=True,
                           past_key_values=cache)
            for cache in (StaticCache(config=config, max_cache_len=2048), static_cache(config, 2048))]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0].scores, runs[1].scores, strict=True))


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler")
def test_inductor_compiled_decoding_gives_the_dynamic_answers(tiny_checkpoint, plain):
    """The real compiler (C++ kernels on the CPU; CUDA graphs on a GPU): about 30 s on 2 cores."""
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    requests = _requests()[:3]
    assert fast.generate(requests) == plain.generate(requests)
    assert fast.static is not None and fast.static._cache_key == (4, 1024)


def test_requests_with_images_give_the_dynamic_answers(tiny_checkpoint, plain, eager_backend, tmp_path,
                                                       monkeypatch):
    """Image tokens attend bidirectionally (an overlay on the mask); the static path leaves the overlay out of
    decoding steps only, where it changes nothing."""
    from PIL import Image

    from mediapipe_g4.engine import ImagePart, TextPart

    made = []
    original = type(plain.model).create_masks_for_generate

    def spy(*args, **kwargs):
        made.append((kwargs["inputs_embeds"].shape[1], kwargs.get("mm_token_type_ids") is not None))
        return original(*args, **kwargs)

    monkeypatch.setattr(type(plain.model), "create_masks_for_generate", staticmethod(spy))
    fast = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", compile=True))
    requests = []
    for i, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        Image.new("RGB", (64, 48), colour).save(tmp_path / f"slide{i}.png")
        requests.append(EngineRequest(
            "notes", (TextPart(f"[00:0{i}] On screen:"), ImagePart(str(tmp_path / f"slide{i}.png")),
                      TextPart("What is on screen? " * 30)),
            settings=GenerationSettings(max_new_tokens=10, greedy=True), image_tokens=70))
    assert fast.generate(requests) == plain.generate(requests)
    prefill, steps = made[0], made[1:]
    assert prefill[0] > 100 and prefill[1]  # the prompt's masks have the overlay
    assert steps and all(step == (1, False) for step in steps)  # the steps' do not


def test_a_text_only_gemma4_with_shared_kv_decodes_on_the_ring_cache():
    """E2B/E4B-like layers (the last two reuse earlier layers' K/V; no cache of their own) in a model without
    its own mask builder (generate's default is wrapped): the same tokens as the dynamic cache, compiled, and
    prefilled in chunks."""
    import torch
    from tiny_model import shared_kv_text_model
    from transformers import CompileConfig

    model = shared_kv_text_model()
    static_decode.static_step_masks(model)
    ids, mask = _ids(batch=2, padding=(0, 5))
    settings = {"max_new_tokens": 25, "min_new_tokens": 25, "do_sample": False}
    config = CompileConfig(fullgraph=False, dynamic=False, backend="eager")
    config._compile_all_devices = True
    cache = static_cache(model.config, 128)
    with torch.no_grad():
        expected = model.generate(input_ids=ids, attention_mask=mask, **settings)
        for extra in ({"compile_config": config}, {"prefill_chunk_size": 7, "disable_compile": True}):
            cache.reset()
            assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **extra,
                                              **settings), expected), extra
