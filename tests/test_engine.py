"""The transformers engine on a tiny random Gemma 4 checkpoint: real audio and frames in, texts out, in
order; output cleaning; and loading errors that say what to do."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import SAMPLES, image_cut, slides_request, truth

from mediapipe_g4.engine import (
    AudioPart,
    Engine,
    EngineRequest,
    GenerationSettings,
    TextPart,
    clean_response,
)
from mediapipe_g4.errors import ModelError
from mediapipe_g4.planner import (
    PlanOptions,
    build_timeline,
    plan_notes,
    plan_transcription,
)
from mediapipe_g4.records import Segment, SpeakerTurn
from mediapipe_g4.token_count import TokenCounter
from mediapipe_g4.transformers_engine import (
    EngineOptions,
    TransformersEngine,
    image_safe_chunk,
    load_config,
    resolve_model,
)

# --------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize("raw, answer", [
    ("Hello there.<turn|>", "Hello there."),
    ("Hello there.<turn|><pad><pad>", "Hello there."),
    ("<|channel>thought\nLet me think.<channel|>The answer.<turn|>", "The answer."),
    ("<|channel>thought\nStill thinking when the tokens ran o", ""),
    ("Plain text<eos>", "Plain text"),
    ("  spaced <|image|> out <bos> ", "spaced  out"),
])
def test_clean_response_fallback(raw, answer):
    assert clean_response(raw) == answer


def test_clean_response_uses_the_response_template(tiny_checkpoint):
    from transformers import AutoTokenizer
    from transformers.cli.serving import utils as serving

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert clean_response("<|channel>thought\nhm<channel|>Yes.<turn|>", tokenizer=tokenizer, prefix="") == "Yes."
    tokenizer.response_template = next(v for k, v in serving._RESPONSE_TEMPLATE_FALLBACKS.items() if "gemma4" in k)
    prefix = "<bos><|turn>user\nhi<turn|>\n<|turn>model\n"
    assert clean_response("<|channel>thought\nhm<channel|>Yes.<turn|><pad>", tokenizer=tokenizer, prefix=prefix) == "Yes."
    assert clean_response("Direct.<turn|>", tokenizer=tokenizer, prefix=prefix + "<|channel>thought\n<channel|>") \
        == "Direct."


# --------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> TransformersEngine:
    return TransformersEngine(EngineOptions(model=str(tiny_checkpoint), batch_size=3))


@pytest.fixture(scope="module")
def e2b_engine(tiny_e2b_checkpoint) -> TransformersEngine:
    return TransformersEngine(EngineOptions(model=str(tiny_e2b_checkpoint), batch_size=3))


@pytest.fixture(scope="module")
def standup(tmp_path_factory):
    from mediapipe_g4 import media, video

    work = tmp_path_factory.mktemp("standup-engine")
    t = truth("standup.mp4")
    return {
        "waveform": media.decode_audio(SAMPLES / "standup.mp4", work),
        "keyframes": video.extract_keyframes(SAMPLES / "standup.mp4", work),
        "turns": [SpeakerTurn(s["start"], s["end"], s["speaker"]) for s in t["segments"]],
        "segments": [Segment(s["start"], s["end"], s["speaker"], s["text"]) for s in t["segments"]],
    }


@pytest.mark.parametrize("family", ["gemma4_unified", "gemma4"])  # the 12B's family, and E2B/E4B's
def test_engine_runs_planned_requests_end_to_end(family, request, standup):
    engine = request.getfixturevalue("engine" if family == "gemma4_unified" else "e2b_engine")
    assert engine.model.config.model_type == family
    assert isinstance(engine, Engine) and engine.device == "cpu" and engine.dtype == "float32"
    counter = TokenCounter(engine.processor)
    options = PlanOptions(keyframe_tokens=140, transcribe_max_new_tokens=4, notes_max_new_tokens=4,
                          section_max_new_tokens=4)
    requests = list(plan_transcription(standup["turns"][:5], standup["waveform"], standup["keyframes"], options,
                                       counter))
    requests += plan_notes(build_timeline(standup["segments"], standup["keyframes"]), 100_000, options, counter)
    assert any(r.images for r in requests) and any(r.audio for r in requests)
    seen: list[tuple] = []
    texts = engine.generate(requests, hook=lambda *a: seen.append(a))
    assert len(texts) == len(requests) and all(isinstance(t, str) for t in texts)
    assert seen[-1] == ("generate", len(requests), len(requests))
    # Answers come back in the requests' order, whatever order the batches ran in (greedy ones repeat exactly).
    again = list(reversed(engine.generate(list(reversed(requests)))))
    greedy = [i for i, r in enumerate(requests) if r.settings.greedy]
    assert len(greedy) == 5 and [again[i] for i in greedy] == [texts[i] for i in greedy]


def test_bfloat16_on_the_cpu_runs_audio_and_slides(tiny_checkpoint, standup):
    """The dtype a CPU takes when float32 weights do not fit: audio and images go through it too."""
    engine = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), dtype="bfloat16"))
    assert engine.device == "cpu" and engine.dtype == "bfloat16" and str(engine.model.dtype) == "torch.bfloat16"
    options = PlanOptions(keyframe_tokens=140, transcribe_max_new_tokens=4)
    requests = list(plan_transcription(standup["turns"][:2], standup["waveform"], standup["keyframes"], options,
                                       TokenCounter(engine.processor)))
    assert all(r.images and r.audio for r in requests)
    texts = engine.generate(requests)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_batch_decodes_to_its_largest_budget_and_cuts_each_answer_to_its_own(engine, monkeypatch):
    """Clips of different lengths share a batch; the batch decodes up to the largest answer budget and each
    answer is what decoding alone with its own budget gives."""
    wave = (np.random.default_rng(3).standard_normal(16_000 * 4) * 0.1).astype(np.float32)
    requests = [EngineRequest("transcribe", (TextPart("Transcribe."), AudioPart.of(wave[: 16_000 * (i + 1)])),
                              settings=GenerationSettings(max_new_tokens=budget))
                for i, budget in enumerate((3, 9, 6))]
    monkeypatch.setattr(engine.model.generation_config, "eos_token_id", [])  # random weights: never stop early
    calls = []
    original = engine.model.generate
    monkeypatch.setattr(engine.model, "generate", lambda **kw: calls.append(kw) or original(**kw))
    together = engine.generate(requests)
    assert [(c["input_ids"].shape[0], c["max_new_tokens"]) for c in calls] == [(3, 9)]  # one batch, largest budget
    alone = [engine.generate([r])[0] for r in requests]
    assert together == alone
    tokens = [len(engine.processor.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in together]
    assert tokens[0] < tokens[2] < tokens[1]


def test_a_batch_ends_when_every_row_has_ended_or_used_its_own_budget(engine, monkeypatch):
    """A row that has used its budget stops with the batch's rows that said <eos>: the batch does not go on to
    the largest budget for it (a decoding loop on a short clip beside a long clip that has finished)."""
    wave = (np.random.default_rng(4).standard_normal(16_000 * 3) * 0.1).astype(np.float32)
    short, long = (EngineRequest("transcribe", (TextPart("Transcribe."), AudioPart.of(wave[: 16_000 * s])),
                                 settings=GenerationSettings(max_new_tokens=budget)) for s, budget in ((1, 3), (3, 9)))
    config = engine.model.generation_config
    monkeypatch.setattr(config, "eos_token_id", [])
    made = []
    original = engine.model.generate
    monkeypatch.setattr(engine.model, "generate",
                        lambda **kw: made.append((out := original(**kw))[:, kw["input_ids"].shape[1]:]) or out)
    engine.generate([long])
    stop = int(made[-1][0, 1])  # the long clip's second token ends it from now on: it finishes after 2 steps
    monkeypatch.setattr(config, "eos_token_id", [stop])
    alone = [engine.generate([r])[0] for r in (short, long)]
    steps_alone = [int(m.shape[1]) for m in made[-2:]]
    assert steps_alone[1] == 2 and steps_alone[0] <= 3
    made.clear()
    assert engine.generate([short, long]) == alone
    assert made[0].shape[1] == max(steps_alone)  # not 9: the short clip stopped at its budget of 3


def test_row_budgets_stop_each_row_at_its_own_length():
    import torch

    from mediapipe_g4.transformers_engine import row_budgets

    criteria = row_budgets([2, 5, 3], prompt_length=10)
    assert criteria(torch.zeros(3, 12, dtype=torch.long), None).tolist() == [True, False, False]
    assert criteria(torch.zeros(3, 13, dtype=torch.long), None).tolist() == [True, False, True]


def test_long_prompts_prefill_in_chunks_that_do_not_cut_an_image(tiny_checkpoint, tmp_path):
    chunked = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), prefill_chunk=200))
    request = slides_request(tmp_path)
    types = chunked._inputs([request])["mm_token_type_ids"]
    assert image_cut(types, 200)  # every 200 tokens would cut a slide
    calls = []
    original = chunked.model.generate
    chunked.model.generate = lambda **kw: calls.append(kw.get("prefill_chunk_size")) or original(**kw)
    (answer,) = chunked.generate([request])
    assert len(calls) == 1 and 100 <= calls[0] < 200 and not image_cut(types, calls[0]) and isinstance(answer, str)


def test_chunked_prefill_gives_the_one_shot_logits_when_no_image_is_cut(tiny_checkpoint, tmp_path):
    """Image tokens attend to each other both ways; a chunk boundary inside a slide hides its later tokens from
    its earlier ones. With boundaries outside the slides the chunked prefill is the one-shot prefill."""
    import torch

    engine = TransformersEngine(EngineOptions(model=str(tiny_checkpoint)))
    inputs = engine._inputs([slides_request(tmp_path)])

    def scores(chunk):
        out = engine.model.generate(**inputs, max_new_tokens=4, do_sample=False, output_scores=True,
                                    return_dict_in_generate=True, prefill_chunk_size=chunk)
        return torch.stack(out.scores)

    one_shot, safe = scores(None), image_safe_chunk(inputs, 200)
    assert safe < 200 and (one_shot - scores(safe)).abs().max() < 1e-5
    assert (one_shot - scores(200)).abs().max() > 1e-4  # cutting a slide is what changed the logits


def test_image_safe_chunk_moves_boundaries_out_of_images():
    import torch

    types = torch.zeros(2, 1000, dtype=torch.long)
    types[0, 95:160] = 1  # an image across 100: chunks of 100 would cut it at 100
    types[1, 590:605] = 2  # a video (left-padded rows share positions)
    size = image_safe_chunk({"input_ids": types, "mm_token_type_ids": types}, 100)
    assert size == 95 and not image_cut(types, size)  # 95 (where the image starts), 190, ..., 570, 665
    assert image_safe_chunk({"input_ids": types, "mm_token_type_ids": torch.zeros_like(types)}, 100) == 100
    assert image_safe_chunk({"input_ids": types}, 100) == 100  # text only
    assert image_safe_chunk({"input_ids": types, "mm_token_type_ids": types}, 1000) == 1000  # one chunk
    types[:, 1:] = 1  # images everywhere: no size avoids them, the given one stays
    assert image_safe_chunk({"input_ids": types, "mm_token_type_ids": types}, 100) == 100


def test_a_processor_loads_once_per_process(tiny_checkpoint, tmp_path, monkeypatch):
    """The planner, the notes' token counter and the engine share one processor (the real one's tokenizer alone is
    a 262 k-token vocabulary); two threads asking at once (an early model load beside the planner) load it once."""
    import shutil
    import threading

    import transformers

    from mediapipe_g4.transformers_engine import load_processor

    folder = shutil.copytree(tiny_checkpoint, tmp_path / "copy")  # a folder no test has loaded yet
    loads = []
    original = transformers.AutoProcessor.from_pretrained
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained",
                        lambda *a, **k: loads.append(a) or original(*a, **k))
    got = []
    threads = [threading.Thread(target=lambda: got.append(load_processor(str(folder), local_only=True)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got.append(load_processor(str(folder)))
    assert len(loads) == 1 and len(got) == 3 and got[0] is got[1] is got[2]


def test_a_model_bigger_than_free_memory_is_refused_before_loading(tiny_checkpoint, monkeypatch):
    """Weights that cannot fit end in one clear error at once (on a CPU the load would end in the kernel's
    out-of-memory kill, without a message); on a CPU, float32 weights that do not fit but bfloat16 ones do make
    the engine take bfloat16 by itself; swap counts."""
    from mediapipe_g4 import memory

    params, _ = memory.count_parameters(load_config(str(tiny_checkpoint)))
    runtime = memory.RUNTIME_BYTES
    free = {"ram": 3.0 * params + runtime, "swap": 0.0}  # bytes: room for 16-bit weights, not for float32 ones

    class Loading(Exception):
        pass

    def load(self, model):
        raise Loading(self.dtype)

    monkeypatch.setattr(TransformersEngine, "_load_model", load)
    monkeypatch.setattr(memory, "system_memory", lambda: (16e9, free["ram"]))
    monkeypatch.setattr(memory, "free_swap", lambda: free["swap"])
    with pytest.raises(Loading, match="bfloat16"):  # float32 does not fit: the weights' own bfloat16 does
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint)))
    with pytest.raises(ModelError, match=r"needs about \S+ GB for its weights \(float32\) and CPU has \S+ GB free \(.*\): "
                                         r"leave out --dtype float32 or pass --dtype bfloat16.*--server URL"):
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint), dtype="float32"))
    free["ram"] = 1.0 * params + runtime
    with pytest.raises(ModelError, match=r"\(bfloat16\) and CPU .*: use a smaller model"):  # the nearer miss
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint)))
    free["swap"] = 4.0 * params  # it fits with swap: it loads, in float32
    with pytest.raises(Loading, match="float32"):
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint)))


def test_a_big_model_on_the_cpu_is_said_to_be_slow(tiny_checkpoint, monkeypatch, caplog):
    from mediapipe_g4 import memory, transformers_engine

    params, _ = memory.count_parameters(load_config(str(tiny_checkpoint)))

    class Loading(Exception):
        pass

    def load(self, model):
        raise Loading

    monkeypatch.setattr(TransformersEngine, "_load_model", load)
    for threshold, warned in ((params * 2, False), (params / 2, True)):  # the tiny model stands in for the 12B
        monkeypatch.setattr(transformers_engine, "CPU_WARN_PARAMS", threshold)
        caplog.clear()
        with caplog.at_level("WARNING", logger="mediapipe_g4"), pytest.raises(Loading):
            TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu"))
        assert ("runs on the CPU here" in caplog.text and "--model google/gemma-4-E4B-it" in caplog.text) == warned


def test_cuda_dtype_is_bf16_where_the_asked_gpu_computes_it(monkeypatch):
    """fp16 on a GPU before Ampere (a T4: torch emulates bf16 there, and says it is supported), bf16 from Ampere
    on; `cuda:1` asks GPU 1, not the current one."""
    import types

    import torch

    from mediapipe_g4 import memory

    majors = {0: 8, 1: 7}  # an A100 and a V100 in one machine
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(major=majors[i]))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert [memory.pick_dtype(d) for d in ("cuda", "cuda:0", "cuda:1")] == ["bfloat16", "bfloat16", "float16"]
    assert memory.pick_dtype("cuda:1", "bfloat16") == "bfloat16"  # asked for: kept


def test_dtype_choice():
    from mediapipe_g4 import memory

    shape = memory.GEMMA4_12B  # 24 GB in bfloat16, 48 GB in float32
    room = {"cpu": 0.0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "weights_room", lambda device: (room["cpu"], "CPU", False))  # what the weights may take
        # Too small for either: bfloat16 too, refused later with the smaller need.
        for free, auto in ((64e9, "float32"), (30e9, "bfloat16"), (10e9, "bfloat16")):
            room["cpu"] = free
            assert memory.choose_dtype(shape, "cpu") == auto
            assert memory.choose_dtype(shape, "cpu", "float32") == "float32"  # asked for: kept
        assert memory.choose_dtype(shape, "mps") == "bfloat16"


def test_out_of_memory_halves_the_batch(engine, monkeypatch):
    import torch

    sizes = []

    def fake(batch, **kw):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [f"ok {batch[0].start}"]

    monkeypatch.setattr(engine, "_generate_batch", fake)
    requests = [EngineRequest("transcribe", (TextPart("x"),), start=float(i), tokens=10 + i) for i in range(3)]
    assert engine.generate(requests) == ["ok 0.0", "ok 1.0", "ok 2.0"]
    assert sizes[0] == 3 and sizes[-3:] == [1, 1, 1]
    sizes.clear()
    monkeypatch.setattr(engine, "options", replace(engine.options, batch_size=4))  # 3 in a batch of 4: halve 3
    assert engine.generate(requests) == ["ok 0.0", "ok 1.0", "ok 2.0"] and sizes == [3, 1, 1, 1]


def test_one_request_out_of_memory_with_the_static_cache_decodes_without_it(engine, monkeypatch):
    """The static path holds a cache 4x the prompt and a compiled step's buffers: a request it has no room for can
    still decode on the dynamic cache. It ended the run with "out of memory ... with one request"."""
    import torch

    tries = []

    def fake(batch, static_ok=True):
        tries.append(static_ok)
        if static_ok:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return ["notes"]

    class Static:  # a static decoder is there; one request a batch
        def fitting_batch(self, size, *args):
            return 1

    monkeypatch.setattr(engine, "static", Static())
    monkeypatch.setattr(engine, "_generate_batch", fake)
    request = EngineRequest("notes", (TextPart("x"),), tokens=100_000)
    assert engine.generate([request, request]) == ["notes", "notes"] and tries == [True, False, True, False]
    monkeypatch.setattr(engine, "static", None)  # no static path to leave: the error says what to do
    with pytest.raises(ModelError, match="out of memory .* with one request of 100000 tokens"):
        engine.generate([request])


def test_a_batch_off_the_static_path_releases_its_cache(engine, monkeypatch):
    """A notes request too long for the static path decoded beside the last transcription batch's static cache
    (21 GB for 64 clips of the 12B), which it needed."""
    released = []

    class Static:
        def fitting_batch(self, size, *args):
            return size

        def plan(self, *args):
            return None  # does not fit: the dynamic cache

        def release(self):
            released.append(True)

    monkeypatch.setattr(engine, "static", Static())
    request = EngineRequest("names", (TextPart("Who is who?"),), settings=GenerationSettings(max_new_tokens=2))
    engine.generate([request])
    assert released == [True]


def test_drafter_is_used_only_for_single_requests(engine, monkeypatch):
    seen = []
    original = engine.model.generate

    def spy(**kwargs):
        seen.append(("assistant_model" in kwargs, kwargs["input_ids"].shape[0]))
        kwargs.pop("assistant_model", None)
        return original(**kwargs)

    monkeypatch.setattr(engine.model, "generate", spy)
    monkeypatch.setattr(engine, "assistant", object())
    wave = np.zeros(16_000, dtype=np.float32)
    req = EngineRequest("transcribe", (TextPart("Transcribe."), AudioPart.of(wave)),
                        settings=GenerationSettings(max_new_tokens=2))
    engine.generate([req, req])
    engine.generate([req])
    assert seen == [(False, 2), (True, 1)]


def test_answers_stop_at_the_turn_end_without_a_generation_config(tiny_checkpoint, tmp_path):
    """A checkpoint folder without generation_config.json (a hand-made copy, a converted model) still stops at
    `<turn|>`; transformers' default from the config stops at `<eos>` alone."""
    import shutil

    folder = tmp_path / "no-generation-config"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "generation_config.json").unlink()
    bare = TransformersEngine(EngineOptions(model=str(folder)))
    tokenizer = bare.processor.tokenizer
    stops = bare.model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<turn|>") in stops and tokenizer.eos_token_id in stops
    assert bare.model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_a_prompt_prefilled_in_chunks_is_not_drafted(tiny_checkpoint, monkeypatch):
    """transformers' assisted decoding prefills the whole prompt at once, ignoring prefill_chunk_size: a prompt
    long enough for chunks decodes without the drafter, in chunks."""
    long_prompts = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), prefill_chunk=64))
    seen = []
    original = long_prompts.model.generate

    def spy(**kwargs):
        seen.append(("assistant_model" in kwargs, kwargs.get("prefill_chunk_size")))
        kwargs.pop("assistant_model", None)
        return original(**kwargs)

    monkeypatch.setattr(long_prompts.model, "generate", spy)
    monkeypatch.setattr(long_prompts, "assistant", object())
    settings = GenerationSettings(max_new_tokens=2)
    long_prompts.generate([EngineRequest("notes", (TextPart("[00:05] S1: the quick brown fox. " * 30),), settings=settings)])
    long_prompts.generate([EngineRequest("notes", (TextPart("Short."),), settings=settings)])
    assert seen == [(False, 64), (True, None)]


def test_drafter_gives_the_same_greedy_output(tiny_checkpoint, tiny_drafter, engine, standup):
    """transformers 5.23 can neither build a Gemma 4 drafter nor feed it from a target without K/V sharing
    (drafter.py); with both mended, speculative decoding changes the speed, never the greedy answer."""
    drafting = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), assistant=str(tiny_drafter)))
    calls = []
    drafting.assistant.register_forward_hook(lambda *_: calls.append(1))
    wave = np.asarray(standup["waveform"])
    requests = [EngineRequest("transcribe", (TextPart("Transcribe."), AudioPart.of(wave[i * 16_000:(i + 3) * 16_000])),
                              settings=GenerationSettings(max_new_tokens=24)) for i in range(2)]
    for request in requests:  # one at a time: the drafter takes single requests
        assert drafting.generate([request]) == engine.generate([request])
    assert calls, "the drafter was not asked for drafts"


def test_seeded_sampling_repeats_itself(engine):
    def ask(seed):
        settings = GenerationSettings(max_new_tokens=12, greedy=False, seed=seed)
        return engine.generate([EngineRequest("notes", (TextPart("Write the notes."),), settings=settings)])

    first = ask(3)
    assert ask(3) == first and first[0]
    assert any(ask(seed) != first for seed in (4, 5, 6))  # the seed is what made them equal


def test_drafter_for_the_e2b_family():
    """E2B/E4B targets share K/V themselves (transformers marks their producers): nothing to mark, and a drafter
    of `gemma4_assistant` type drafts to the same greedy tokens."""
    import torch
    from tiny_model import shared_kv_text_model

    from mediapipe_g4.drafter import random_drafter, share_kv_with_drafter

    target = shared_kv_text_model()
    assert share_kv_with_drafter(target) == []
    drafter = random_drafter(target.config, hidden=32, intermediate=64)
    assert type(drafter).__name__ == "Gemma4AssistantForCausalLM"
    ids = torch.randint(3, 300, (1, 40), generator=torch.Generator().manual_seed(0))
    settings = {"max_new_tokens": 30, "min_new_tokens": 30, "do_sample": False}
    with torch.no_grad():
        assert torch.equal(target.generate(ids, assistant_model=drafter, **settings), target.generate(ids, **settings))


def test_drafter_for_another_model_is_refused(tiny_checkpoint, tmp_path):
    from transformers import AutoConfig

    from mediapipe_g4.drafter import random_drafter

    config = AutoConfig.from_pretrained(tiny_checkpoint)
    config.text_config.hidden_size = 48
    random_drafter(config, hidden=16, intermediate=32).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="made for a model with hidden size 48"):
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint), assistant=str(tmp_path)))


# --------------------------------------------------------------------------- loading errors


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "meeting.wav").write_bytes(b"RIFF")  # the recording given as --model: not "does not exist"
    with pytest.raises(ModelError, match="meeting.wav is a file, not a model folder"):
        resolve_model(str(tmp_path / "meeting.wav"))
    assert resolve_model("google/gemma-4-12B-it") == ("google/gemma-4-12B-it", False)


def test_offline_model_not_downloaded_says_how(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError) as err:
        TransformersEngine(EngineOptions(model="google/gemma-4-12B-it"))
    message = str(err.value)
    assert "google/gemma-4-12B-it" in message and "hf download google/gemma-4-12B-it" in message
    assert "--model" in message


def test_missing_drafter_errors_name_the_assistant_option(tiny_checkpoint, monkeypatch, tmp_path):
    from huggingface_hub import constants

    with pytest.raises(ModelError, match="does not exist.*google/gemma-4-12B-it-assistant"):
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint), assistant=str(tmp_path / "nowhere")))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError) as err:
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint), assistant="google/gemma-4-12B-it-assistant"))
    message = str(err.value)
    assert "hf download google/gemma-4-12B-it-assistant" in message and "--assistant /path" in message


def test_not_a_gemma4_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="Gemma 4"):
        load_config(str(tmp_path))


def test_quantize_needs_cuda_and_bitsandbytes(tiny_checkpoint):
    with pytest.raises(ModelError, match="CUDA"):
        TransformersEngine(EngineOptions(model=str(tiny_checkpoint), device="cpu", quantize="4bit"))


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
@pytest.mark.parametrize("family", ["tiny_checkpoint", "tiny_e2b_checkpoint"])
def test_quantization_leaves_the_towers_embedders_and_head_in_16_bits(family, quantize, request, monkeypatch):
    """The engine's BitsAndBytesConfig as bitsandbytes reads it (transformers' own matcher, over the model's real
    module names): every linear layer of the audio/vision towers and embedders and the head stays, the language
    model's go. (The config once passed bare names, which match nothing under `model.`.)"""
    import types

    import torch
    from transformers import AutoConfig, AutoModelForMultimodalLM
    from transformers.quantizers.quantizers_utils import should_convert_module

    from mediapipe_g4.transformers_engine import _quantization_config

    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))  # not installed here
    skip = _quantization_config(quantize, "bfloat16", "cuda").llm_int8_skip_modules
    model = AutoModelForMultimodalLM.from_config(AutoConfig.from_pretrained(request.getfixturevalue(family)))
    linear = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    kept = {n for n in linear if not should_convert_module(n, skip)}
    media = [n for n in linear if n.split(".")[1:2] in (["embed_vision"], ["embed_audio"], ["vision_tower"],
                                                         ["audio_tower"])]
    assert media and set(media) <= kept and "lm_head" in kept
    assert kept == set(media) | {"lm_head"}  # the rest, the language model, is quantized
    assert any("language_model" in n for n in set(linear) - kept)


def _resident_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (Linux: /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps", encoding="utf-8"):
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise (Linux)")
def test_reading_every_clip_leaves_the_waveform_mapped_not_resident(tmp_path):
    """Transcription reads every clip of the memory-mapped waveform: without dropping each clip's pages once read,
    all of a 3-hour recording's 690 MB stayed resident in the process (its RSS grew by that much)."""
    from mediapipe_g4.engine import AudioPart
    from mediapipe_g4.media import _open_waveform

    path = tmp_path / "audio.f32"
    rng = np.random.default_rng(0)
    path.write_bytes(rng.normal(0, 0.1, 16_000 * 1000).astype("<f4").tobytes())  # 1000 s, 64 MB
    waveform = _open_waveform(path)
    clips = [AudioPart(t, t + 25.0, waveform) for t in np.arange(0, 975, 25.0)]
    first = clips[0].samples()
    read = sum(float(np.abs(c.samples()).sum()) for c in clips)
    assert read > 0 and np.array_equal(first, np.asarray(waveform[: 25 * 16_000]))
    assert _resident_kb(path) < 8 * 1024, f"{_resident_kb(path)} kB of 64 MB resident"


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise (Linux)")
def test_clips_apart_leave_none_of_the_waveform_resident(tmp_path):
    """A page fault maps more of the file than the page (fault-around, large folios): dropping only the pages inside
    each clip left 0.5-1.5 MB resident per clip of a decoded recording (3-hour meeting: 3,315 clips)."""
    from conftest import ffmpeg

    from mediapipe_g4.engine import AudioPart
    from mediapipe_g4.media import decode_audio

    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=600:r=16000", str(tmp_path / "noise.wav"))
    waveform = decode_audio(tmp_path / "noise.wav", tmp_path / "work")
    for t in np.arange(0, 590, 20.0):  # 8 s of speech every 20 s
        AudioPart(t + 3.3, t + 11.3, waveform).samples()
    assert _resident_kb(waveform.filename) < 2 * 1024, f"{_resident_kb(waveform.filename)} kB of 38 MB resident"


def test_quantized_weights_count_what_bitsandbytes_leaves_in_16_bits(tiny_e2b_checkpoint):
    """E2B/E4B keep a per-layer embedding beside the token one (an nn.Embedding: bitsandbytes never quantizes it);
    the memory estimate of `--quantize` counts it, the towers and the embedders at 2 bytes a parameter."""
    from transformers import AutoModelForMultimodalLM, Gemma4Config

    from mediapipe_g4.memory import shape_from_config, weights_bytes

    config = load_config(str(tiny_e2b_checkpoint))
    model = AutoModelForMultimodalLM.from_config(config)
    stays = sum(p.numel() for n, p in model.named_parameters() if "embed" in n or "tower" in n)
    assert "model.language_model.embed_tokens_per_layer.weight" in dict(model.named_parameters())
    shape = shape_from_config(config, "tiny-e2b")
    assert stays <= shape.sixteen_bit_params < shape.params
    assert weights_bytes(shape, quantize="4bit") > 2 * stays
    # The default gemma4 config: 5.1 B parameters, 2.6 B of them embeddings. Counted as 4-bit they made 3.5 GB.
    big = shape_from_config(Gemma4Config(), "gemma4")
    assert big.params > 5e9 and big.sixteen_bit_params > 2.6e9
    assert 6.0e9 < weights_bytes(big, quantize="4bit") < 7.0e9


def test_the_download_hint_names_an_hf_that_runs_here(monkeypatch, tmp_path):
    """The README's venv is never activated, so `hf download ...` pasted from the error was "command not found": the
    hint names the `hf` installed beside this Python when none is on the PATH."""
    from pathlib import Path

    from mediapipe_g4 import transformers_engine as te

    monkeypatch.setenv("PATH", str(tmp_path))  # no hf on it
    beside = Path(sys.executable).parent / "hf"
    assert te.hf_command() == (str(beside) if beside.is_file() else "hf")
    assert f"`{te.hf_command()} download google/gemma-4-12B-it`" in te.download_hint("google/gemma-4-12B-it")
    (tmp_path / "hf").write_text("#!/bin/sh\n")
    (tmp_path / "hf").chmod(0o755)
    assert te.hf_command() == "hf"
