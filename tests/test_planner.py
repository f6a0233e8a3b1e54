"""The planner: clips within Gemma 4's 30 s, cut in pauses, covering all speech; token counts equal to the
processor's real `input_ids`; notes fitted to the context budget (sections, then merges)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_NAMES, SAMPLES, truth

from mediapipe_g4.engine import AudioPart, EngineRequest, ImagePart, TextPart
from mediapipe_g4.errors import PlanError
from mediapipe_g4.planner import (
    PlanOptions,
    build_timeline,
    clip_spans,
    keyframe_at,
    make_plan,
    plan_merge,
    plan_notes,
    plan_transcription,
)
from mediapipe_g4.records import SAMPLE_RATE, Keyframe, Segment, SpeakerTurn
from mediapipe_g4.token_count import TokenCounter, audio_tokens_for, image_tokens_for

LIMIT = int(30 * SAMPLE_RATE)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> dict[str, dict]:
    """Each sample's waveform, true turns and lines, and (for the video) its keyframes."""
    from mediapipe_g4 import media, video

    out = {}
    for name in SAMPLE_NAMES:
        work = tmp_path_factory.mktemp(Path(name).stem)
        t = truth(name)
        out[name] = {
            "waveform": media.decode_audio(SAMPLES / name, work),
            "turns": [SpeakerTurn(s["start"], s["end"], s["speaker"]) for s in t["segments"]],
            "segments": [Segment(s["start"], s["end"], s["speaker"], s["text"]) for s in t["segments"]],
            "keyframes": video.extract_keyframes(SAMPLES / name, work),
        }
    return out


def real_length(processor, request: EngineRequest) -> int:
    kwargs = {"images_kwargs": {"max_soft_tokens": request.image_tokens}} if request.images else {}
    out = processor.apply_chat_template(request.messages(), tokenize=True, return_dict=True,
                                        add_generation_prompt=True, processor_kwargs=kwargs)
    return len(out["input_ids"][0])


def local_level_db(waveform: np.ndarray, t: float, half: float) -> float:
    a, b = max(0, int((t - half) * SAMPLE_RATE)), int((t + half) * SAMPLE_RATE)
    x = np.asarray(waveform[a:b], dtype=np.float64)
    return 10 * np.log10(np.mean(x**2) + 1e-12)


def covered(turn: SpeakerTurn, spans: list[tuple[int, int, str]]) -> bool:
    """Every 10 ms of the turn lies in some clip."""
    for t in np.arange(turn.start, turn.end, 0.01):
        s = round(t * SAMPLE_RATE)
        if not any(a <= s < b for a, b, _ in spans):
            return False
    return True


# --------------------------------------------------------------------------- counting rules


def test_audio_rule_is_the_processors(processor):
    for n in (0, 1, 639, 640, 641, 16_000, 16_000 * 7 + 13, LIMIT - 1, LIMIT):
        assert audio_tokens_for(n) == processor._compute_audio_num_tokens(range(n), SAMPLE_RATE)
    assert audio_tokens_for(LIMIT) == 750  # 30 s is the model's cap


@pytest.mark.parametrize("soft", [70, 140, 280, 560, 1120])
def test_image_rule_is_the_processors(processor, soft):
    sizes = [(360, 640), (1080, 1920), (640, 360), (48, 2000), (2000, 48), (100, 100), (31, 700), (4000, 3000)]
    expected = processor._get_num_multimodal_tokens(image_sizes=sizes, images_kwargs={"max_soft_tokens": soft})
    assert [image_tokens_for(h, w, soft) for h, w in sizes] == expected["num_image_tokens"]
    assert all(n <= soft for n in expected["num_image_tokens"])


def test_counts_exact_for_gemma4_e2b_e4b_processor():
    """`gemma4` (E2B/E4B) checkpoints count audio through a mel + conformer rule; the counter asks it."""
    from tiny_model import CHAT_TEMPLATE, build_tokenizer
    from transformers import Gemma4Processor
    from transformers.models.gemma4.feature_extraction_gemma4 import (
        Gemma4AudioFeatureExtractor,
    )
    from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor
    from transformers.models.gemma4.video_processing_gemma4 import Gemma4VideoProcessor

    processor = Gemma4Processor(Gemma4AudioFeatureExtractor(), Gemma4ImageProcessor(), build_tokenizer(),
                                Gemma4VideoProcessor(), chat_template=CHAT_TEMPLATE)
    counter = TokenCounter(processor)
    rng = np.random.default_rng(0)
    for n in (321, 5000, 16_000 * 7 + 123, LIMIT):
        request = EngineRequest("transcribe", (TextPart("Transcribe this."),
                                               AudioPart.of(rng.normal(0, 0.1, n).astype(np.float32))))
        assert counter.count(request) == real_length(processor, request)
    assert counter.audio_tokens(LIMIT) == 750


# --------------------------------------------------------------------------- clips


def synthetic(seconds: float, words: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Silence with noise bursts ("words") at the given times."""
    rng = np.random.default_rng(seed)
    w = np.zeros(int(max([seconds, *(b + 0.5 for _, b in words)]) * SAMPLE_RATE), dtype=np.float32)
    for a, b in words:
        i, j = int(a * SAMPLE_RATE), int(b * SAMPLE_RATE)
        w[i:j] = rng.normal(0, 0.1, j - i)
    return w


def test_long_turn_is_cut_in_pauses_never_inside_a_word():
    # 95 s of one speaker: 0.35 s words with 0.08 s gaps (inside words' stop consonants) and
    # 0.4 s pauses every 7 words.
    words, t = [], 0.5
    while t < 94:
        for _ in range(7):
            words.append((t, t + 0.35))
            t += 0.43
        t += 0.4
    wave = synthetic(95, words)
    spans = clip_spans([SpeakerTurn(0.5, words[-1][1], "S1")], wave)
    assert len(spans) >= 4
    assert all(b - a <= LIMIT for a, b, _ in spans)
    for a, _, _ in spans[1:]:
        t = a / SAMPLE_RATE
        assert not any(s - 0.01 < t < e + 0.01 for s, e in words), f"cut at {t:.2f} s is inside a word"
        gap_after = min(s for s, _ in words if s > t) - max(e for _, e in words if e < t)
        assert gap_after >= 0.39, "cut in a short gap, not a pause"
    assert covered(SpeakerTurn(0.5, words[-1][1], "S1"), spans)


def test_turns_merge_pad_and_overlap():
    wave = synthetic(40, [(1, 3), (3.3, 5), (10, 12), (11.5, 14)])
    turns = [SpeakerTurn(1, 3, "S1"), SpeakerTurn(3.3, 5, "S1"), SpeakerTurn(10, 12, "S2"),
             SpeakerTurn(11.5, 14, "S1")]
    spans = clip_spans(turns, wave, PlanOptions(pad=0.2))
    assert [(round(a / SAMPLE_RATE, 2), round(b / SAMPLE_RATE, 2), s) for a, b, s in spans] == [
        (0.8, 5.2, "S1"), (9.8, 12.0, "S2"), (11.5, 14.2, "S1")]  # no padding into an overlap
    assert all(covered(t, spans) for t in turns)
    assert clip_spans([], wave) == []
    assert clip_spans([SpeakerTurn(50, 60, "S1")], wave) == []  # past the end of the audio


def test_a_clips_answer_budget_follows_its_length():
    from mediapipe_g4.planner import answer_budget

    # 10 tokens a second + 48, in steps of 64, at most transcribe_max_new_tokens (320)
    assert [answer_budget(s) for s in (0.5, 1.0, 1.7, 5.0, 10.0, 14.4, 20.0, 30.0)] == \
        [64, 64, 128, 128, 192, 192, 256, 320]
    assert answer_budget(10.0, PlanOptions(translate_to="English")) == 256  # the answer says it twice
    assert answer_budget(30.0, PlanOptions(translate_to="English")) == 640  # and has twice the cap (was 320)
    assert answer_budget(30.0, PlanOptions(transcribe_max_new_tokens=100)) == 100
    wave = np.zeros(SAMPLE_RATE * 40, dtype=np.float32)
    turns = [SpeakerTurn(0.0, 1.0, "S1"), SpeakerTurn(3.0, 30.0, "S2")]
    budgets = [r.settings.max_new_tokens for r in plan_transcription(turns, wave, (), PlanOptions(pad=0.0))]
    assert budgets == [64, 320]


def test_vocabulary_is_parsed_once_each_and_kept_short():
    from mediapipe_g4.prompts import ASR_PROMPT, parse_vocabulary, transcription_instruction

    assert parse_vocabulary(" Priya  Raman, kubernetes\nKubernetes,, OKR ") == ("Priya Raman", "kubernetes", "OKR")
    assert parse_vocabulary(None) == () and parse_vocabulary(" , ") == ()
    assert parse_vocabulary("#eng-infra, Kubernetes") == ("#eng-infra", "Kubernetes")  # a term, given inline
    with pytest.raises(PlanError, match="keep it to 600 at most"):
        parse_vocabulary(",".join(f"Term number {i}" for i in range(60)))
    assert transcription_instruction("English") == ASR_PROMPT.format(language="English")  # none: the card's prompt
    with_terms = transcription_instruction("English", vocabulary=("OKR",), with_image=True)
    assert with_terms.startswith(ASR_PROMPT.format(language="English"))
    assert "spelled as they should be written: OKR.\nThe image is what was on screen" in with_terms


def test_keyframe_at():
    frames = [Keyframe(0, 14, "a.jpg", 640, 360), Keyframe(14, 31, "b.jpg", 640, 360)]
    assert keyframe_at(frames, 13.9).image_path == "a.jpg"
    assert keyframe_at(frames, 14).image_path == "b.jpg"
    assert keyframe_at(frames, 40) is None


def test_options_are_checked():
    with pytest.raises(PlanError, match="30 s"):
        PlanOptions(max_clip=31)
    with pytest.raises(PlanError, match="keyframe tokens"):
        PlanOptions(keyframe_tokens=100)
    with pytest.raises(PlanError, match="layout"):
        PlanOptions(layout="image-first")


def test_transcript_times_are_the_speech_not_the_clips_padding():
    """A clip hears 0.2 s around a turn, but its segment starts and ends with the turn; a turn cut into clips is
    joined into segments of a minute at most, from its start to its end."""
    from mediapipe_g4.transcript import segments_from_answers

    words = [(1.0, 3.0), (3.3, 5.0), (10.0, 12.0), (14.0, 75.0)]
    wave = synthetic(80, words)
    turns = [SpeakerTurn(1, 3, "S1"), SpeakerTurn(3.3, 5, "S1"), SpeakerTurn(10, 12, "S2"), SpeakerTurn(14, 75, "S2")]
    requests = plan_transcription(turns, wave, options=PlanOptions(pad=0.2))
    assert requests[0].start == pytest.approx(0.8) and requests[0].speech == pytest.approx((1.0, 5.0))
    assert len(requests) >= 5  # the 61 s turn takes three clips
    segments = segments_from_answers(requests, [f"clip {i}" for i in range(len(requests))])
    assert [(s.start, s.speaker) for s in segments[:3]] == [(1.0, "S1"), (10.0, "S2"), (14.0, "S2")]
    assert [s.end for s in segments[:2]] == [5.0, 12.0] and segments[-1].end == 75.0 and len(segments) == 4
    assert segments[2].end == segments[3].start and segments[2].end - segments[2].start <= 60.0
    assert " ".join(s.text for s in segments[2:]) == " ".join(f"clip {i}" for i in range(2, len(requests)))


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_clips_cover_all_speech_within_30s(decoded, name):
    d = decoded[name]
    duration = len(d["waveform"]) / SAMPLE_RATE
    for turns in (d["turns"], [SpeakerTurn(0.0, duration, "S1")]):  # true turns, and one long turn
        spans = clip_spans(turns, d["waveform"])
        assert all(0 < b - a <= LIMIT for a, b, _ in spans)
        assert all(covered(t, spans) for t in turns)
        for a, _, _ in spans[1:] if len(turns) == 1 else []:
            t = a / SAMPLE_RATE  # a cut of the long turn: in a pause, well below the speech around it
            assert local_level_db(d["waveform"], t, 0.01) < local_level_db(d["waveform"], t, 3.0) - 15


# --------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_planned_count_is_the_processors(decoded, processor, name):
    d = decoded[name]
    counter = TokenCounter(processor)
    requests = []
    for options in (PlanOptions(), PlanOptions(keyframe_tokens=140, language="English", vocabulary=("Priya", "OKR")),
                    PlanOptions(keyframe_tokens=70, layout="text-image-audio", max_clip=10)):
        requests += plan_transcription(d["turns"], d["waveform"], d["keyframes"], options, counter)
    timeline = build_timeline(d["segments"], d["keyframes"])
    (whole,) = plan_notes(timeline, 100_000, PlanOptions(), counter)
    requests += plan_notes(timeline, 100_000, PlanOptions(vocabulary=("Priya Raman", "Kubernetes")), counter)
    requests.append(whole)
    small = PlanOptions(section_max_new_tokens=128, notes_max_new_tokens=256, notes_image_tokens=70)
    for budget in range(whole.tokens + 255, 500, -5):  # the largest budget that needs two sections
        try:
            split = plan_notes(timeline, budget, small, counter)
        except PlanError:
            continue
        if sum(r.kind == "notes_section" for r in split) >= 2:
            break
    assert all(r.tokens + r.settings.max_new_tokens <= budget for r in split)
    requests += split
    sections = [r for r in requests if r.kind == "notes_section"]
    assert len(sections) >= 2
    requests += plan_merge([(r.start, r.end, "A summary of this part, with 3 decisions.") for r in sections],
                           100_000, PlanOptions(), counter)
    for r in requests:
        # Only a merge over summaries not yet written is an estimate (summaries at full length).
        assert r.estimated == (r.kind in ("notes", "notes_merge") and "…" in str(r.parts))
        if r.estimated:
            assert r.tokens > real_length(processor, r)
        else:
            assert r.tokens == real_length(processor, r), r.to_dict()
        if r.kind == "transcribe":
            assert r.audio_seconds <= 30 and isinstance(r.parts[-1 if not r.images else 1], (AudioPart, ImagePart))
    if d["keyframes"]:
        assert any(r.images and r.kind == "transcribe" for r in requests)


def test_requests_reference_the_waveform_not_copies(decoded):
    d = decoded["standup.mp4"]
    r = plan_transcription(d["turns"], d["waveform"])[0]
    (audio,) = r.audio
    assert audio.waveform is d["waveform"]
    assert r.parts[0] == TextPart(r.parts[0].text) and "Transcribe" in r.parts[0].text  # instruction first


# --------------------------------------------------------------------------- notes


def _timeline(minutes: int, slides_every: int = 300) -> tuple:
    segments = [Segment(t, t + 9, f"S{1 + (t // 10) % 3}", f"Line number {t} about the payment service and tests.")
                for t in range(0, minutes * 60, 10)]
    frames = [Keyframe(t, t + slides_every, __file__, 640, 360) for t in range(0, minutes * 60, slides_every)]
    return segments, frames


def test_notes_fit_the_budget_in_sections_then_whole(tmp_path):
    from PIL import Image

    img = tmp_path / "slide.jpg"
    Image.new("RGB", (640, 360), "white").save(img)
    segments, frames = _timeline(60)
    frames = [Keyframe(k.time, k.end, str(img), 640, 360) for k in frames]
    timeline = build_timeline(segments, frames)
    counter = TokenCounter()
    options = PlanOptions(notes_max_new_tokens=1000, section_max_new_tokens=500)
    (whole,) = plan_notes(timeline, 1_000_000, options, counter)
    assert whole.kind == "notes" and len(whole.images) == len(frames)
    budget = 8000
    requests = plan_notes(timeline, budget, options, counter)
    sections = [r for r in requests if r.kind == "notes_section"]
    assert len(sections) >= 2 and requests[-1].kind == "notes"
    for r in requests:
        assert r.tokens + r.settings.max_new_tokens <= budget
    # a part runs to its last speech, not to the end of a slide still on screen: in order, no overlap
    assert sections[0].start == 0 and sections[-1].end == segments[-1].end < frames[-1].end
    assert all(a.end <= b.start for a, b in itertools.pairwise(sections))
    assert sum(len(r.images) for r in sections) == len(frames)
    # A small budget needs merges of merges; every request still fits.
    tight = plan_notes(timeline, 2600, options, counter)
    assert any(r.kind == "notes_merge" for r in tight) and tight[-1].kind == "notes"
    assert all(r.tokens + r.settings.max_new_tokens <= 2600 for r in tight)
    with pytest.raises(PlanError, match="context-tokens"):
        plan_notes(timeline, 600, options, counter)
    # Notes are sampled, with the plan's seed (so a rerun samples the same notes).
    assert all(not r.settings.greedy and r.settings.seed == 0 for r in tight)
    reseeded = plan_notes(timeline, 2600, replace(options, seed=7), counter)
    assert {r.settings.seed for r in reseeded} == {7}


def test_notes_are_asked_for_in_the_transcripts_language():
    """Notes of a meeting held in German are written in German unless --notes-language says otherwise; the
    translation's language wins over the spoken one; with no language given, the prompts are the plain ones."""
    from mediapipe_g4.prompts import NOTES_PROMPT

    segments, _ = _timeline(60)
    timeline = build_timeline(segments)
    counter = TokenCounter()

    def instructions(options: PlanOptions, budget: int = 2600) -> list[str]:
        return [r.parts[0].text for r in plan_notes(timeline, budget, options, counter)]

    (plain,) = instructions(PlanOptions(), 1_000_000)
    assert plain == NOTES_PROMPT  # byte for byte: answers cached before still match
    assert PlanOptions().notes_language is None
    assert PlanOptions(language="German").notes_language == "German"
    assert PlanOptions(language="German", translate_to="English").notes_language == "English"
    assert PlanOptions(language="German", notes_language="English").notes_language == "English"
    line = "Write in German (keep any JSON keys as named above)."
    split = instructions(PlanOptions(language="German", notes_max_new_tokens=1000, section_max_new_tokens=500))
    assert len(split) >= 3 and all(text.endswith(line) for text in split)  # sections, merges and the notes
    (whole,) = instructions(PlanOptions(language="German", vocabulary=("OKR",)), 1_000_000)
    assert whole.startswith(NOTES_PROMPT + "\n" + line + "\n") and "OKR" in whole


def test_notes_at_plan_time_are_estimated_from_speech():
    turns = [SpeakerTurn(t, t + 20, "S1") for t in range(0, 600, 20)]
    options = PlanOptions(transcript_tokens_per_second=3.5)
    (notes,) = plan_notes(build_timeline(turns), 1_000_000, options, TokenCounter())
    assert notes.estimated and notes.tokens >= 600 * 3.5
    (known,) = plan_merge([(0, 60, "First part."), (60, 120, "Second part.")], 100_000, options, TokenCounter())
    (unknown,) = plan_merge([(0, 60, None), (60, 120, None)], 100_000, options, TokenCounter())
    assert known.kind == unknown.kind == "notes"
    assert unknown.tokens >= known.tokens + 2 * options.section_max_new_tokens - 10


# --------------------------------------------------------------------------- the whole plan


def test_make_plan_json_shape(decoded, tiny_checkpoint):
    d = decoded["standup.mp4"]
    plan = make_plan(d["waveform"], d["turns"], d["keyframes"], model=str(tiny_checkpoint),
                     options=PlanOptions(keyframe_tokens=140, context_tokens=6000))
    out = json.loads(json.dumps(plan.to_dict()))
    assert out["exact"] is True and out["context_window"] == 8192 and out["context_budget"] == 6000
    assert {"duration", "context_window", "requests", "totals", "memory", "warnings"} <= set(out)
    assert {"kind", "start", "end", "audio_seconds", "images", "tokens"} <= set(out["requests"][0])
    assert out["totals"]["by_kind"]["transcribe"]["requests"] == sum(
        1 for r in out["requests"] if r["kind"] == "transcribe")
    # A budget too small for any notes plans the transcription all the same, and says why there are no notes (it
    # stopped the run before one clip was transcribed); the notes' answers are fitted to a small budget.
    small = PlanOptions(context_tokens=1024)
    tight = make_plan(d["waveform"], d["turns"], model=str(tiny_checkpoint), options=small)
    assert {r.kind for r in tight.requests} == {"transcribe"}
    assert any(w.startswith("no notes can be planned: a context budget of 1024 tokens") for w in tight.warnings), \
        tight.warnings
    assert (tight.options.notes_max_new_tokens, tight.options.section_max_new_tokens) == (512, 256)
    alone = make_plan(d["waveform"], d["turns"], model=str(tiny_checkpoint), options=small, notes=False)
    assert alone.requests and {r.kind for r in alone.requests} == {"transcribe"}
    slot = make_plan(d["waveform"], d["turns"], model=str(tiny_checkpoint), options=PlanOptions(context_tokens=4096))
    notes = [r for r in slot.requests if r.kind == "notes"]  # a llama.cpp slot's 4096: notes of a short meeting
    assert len(notes) == 1 and notes[0].tokens + notes[0].settings.max_new_tokens <= 4096


def test_make_plan_without_processor_files_estimates(decoded, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    d = decoded["phone_call.wav"]
    plan = make_plan(d["waveform"], d["turns"], model="google/gemma-4-12B-it", options=PlanOptions(context_tokens=32768))
    assert not plan.exact and all(r.estimated for r in plan.requests)
    assert any("hf download google/gemma-4-12B-it" in w for w in plan.warnings)
    assert plan.context_window == 262_144
    for r in plan.requests:
        if r.kind == "transcribe":  # the audio part of an estimate is exact: 25 tokens a second
            assert r.tokens >= audio_tokens_for(r.audio[0].num_samples)


def test_a_lecture_of_one_long_turn_plans_notes_in_sections(processor):
    """The notes read one line a clip: one 40-minute turn (a lecture) fits sections of a small budget at plan time,
    as its clips' lines do at run time (planned whole, it fitted none, and `plan` said no notes could be made)."""
    rng = np.random.default_rng(0)
    waveform = (0.1 * rng.standard_normal(40 * 60 * SAMPLE_RATE)).astype(np.float32)
    plan = make_plan(waveform, [SpeakerTurn(0.0, 40 * 60.0, "S1")], processor=processor,
                     options=PlanOptions(context_tokens=8192))
    assert not any("no notes" in w for w in plan.warnings), plan.warnings
    sections = [r for r in plan.requests if r.kind == "notes_section"]
    assert len(sections) >= 2 and [r.kind for r in plan.requests][-1] == "notes"
    assert all(r.tokens + r.settings.max_new_tokens <= 8192 for r in plan.requests)
    assert sections[0].start == 0.0 and sections[-1].end == pytest.approx(40 * 60.0, abs=1.0)
    # and at run time, over what the clips' answers make (a turn's clips joined, a minute at most): it fits too
    from mediapipe_g4.transcript import segments_from_answers

    clips = [r for r in plan.requests if r.kind == "transcribe"]
    words = "we now turn to the next result of the experiment and what it means for the method " * 5
    segments = segments_from_answers(clips, [words] * len(clips))
    assert 35 <= len(segments) <= 50 and max(s.end - s.start for s in segments) <= 60.0
    at_run = plan_notes(build_timeline(segments), plan.context_budget, plan.options, TokenCounter(processor))
    assert [r.kind for r in at_run][-1] == "notes" and any(r.kind == "notes_section" for r in at_run)
    assert all(r.tokens + r.settings.max_new_tokens <= 8192 for r in at_run)


@pytest.mark.parametrize("line", ["我们下周二发布支付重试功能，然后更新文档。谢谢王伟。" * 3,
                                  "We ship the payment retry feature next Tuesday, then update the docs. Thanks, Bob."])
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("count", [600, 115])
def test_the_naming_request_fits_the_budget_in_any_script(processor, line, exact, count):
    """The naming prompt was cut at three characters a token: a long Chinese meeting's came to about three times the
    budget (on a model server, past its window: no names and no notes); and a transcript shorter than the first cut
    was not cut at all."""
    from fake_engine import ScriptedEngine

    from mediapipe_g4.pipeline import name_speakers

    segments = [Segment(i * 10.0, i * 10.0 + 9, f"S{i % 3 + 1}", line) for i in range(count)]
    engine = ScriptedEngine({"names": "{}"})
    counter = TokenCounter(processor if exact else None)
    name_speakers(engine, segments, 8192, counter)
    (request,) = engine.seen
    assert counter.count(request) + request.settings.max_new_tokens <= 8192
    assert counter.count(request) > min(8192 // 2, counter.text_tokens(line) * count // 2)  # not cut to nothing
    if exact:
        assert real_length(processor, request) + request.settings.max_new_tokens <= 8192


def test_a_recording_without_speech_plans_no_notes(decoded, processor):
    """`summarize` skips the notes of a recording without speech; `plan` listed a notes request all the same."""
    d = decoded["phone_call.wav"]
    plan = make_plan(d["waveform"], [], processor=processor, options=PlanOptions(context_tokens=32768))
    assert list(plan.requests) == []


def test_make_plan_with_a_broken_model_folder_is_an_error(decoded, tmp_path):
    """A folder whose config does not load stops `transcribe` at once; `plan` said estimates for the 12B instead."""
    from mediapipe_g4.errors import ModelError

    (tmp_path / "config.json").write_text("{bad")
    d = decoded["phone_call.wav"]
    with pytest.raises(ModelError, match="cannot load the config of the folder"):
        make_plan(d["waveform"], d["turns"], model=str(tmp_path), options=PlanOptions())


# --------------------------------------------------------------------------- the command


def test_plan_command(monkeypatch, tmp_path, tiny_checkpoint):
    """`g4media plan` on the video sample, with the tiny model's processor (diarization replaced by the truth)."""
    from click.testing import CliRunner

    from mediapipe_g4 import diarize as diarize_module
    from mediapipe_g4 import sides
    from mediapipe_g4.cli import main
    from mediapipe_g4.records import Diarization

    turns = tuple(SpeakerTurn(s["start"], s["end"], s["speaker"]) for s in truth("standup.mp4")["segments"])
    def fake(waveform, **kw):
        return Diarization(64.0, ("S1", "S2", "S3"), turns)

    monkeypatch.setattr(diarize_module, "diarize", fake)
    monkeypatch.setattr(sides, "diarize", fake)  # the standup's channels are alike: it is diarized mixed
    monkeypatch.setenv("G4MEDIA_CACHE", str(tmp_path))
    runner = CliRunner()
    args = ["plan", str(SAMPLES / "standup.mp4"), "--model", str(tiny_checkpoint), "--keyframe-tokens", "140"]
    result = runner.invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["exact"] and out["duration"] == pytest.approx(63.94, abs=0.05)
    kinds = [r["kind"] for r in out["requests"]]
    assert kinds.count("transcribe") >= len(turns) - 3 and kinds[-1] == "notes"
    assert all(r["audio_seconds"] <= 30 for r in out["requests"])
    text = runner.invoke(main, args + ["--context-tokens", "3000"])  # the whole timeline + its answer do not fit
    assert text.exit_code == 0, text.output
    assert "notes_section" in text.stdout and "exact" in text.stdout and "memory:" in text.stdout
    bad = runner.invoke(main, args + ["--model", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "Error:" in bad.output and "does not exist" in bad.output


@pytest.mark.parametrize("given, taken", [(" ", None), ("", None), ("  Brazilian\n Portuguese ", "Brazilian Portuguese")])
def test_an_empty_language_lets_the_model_tell(tmp_path, tiny_checkpoint, given, taken):
    """`--language "$LANG_NAME"` with the variable empty or blank: no language (" " went into the model card's prompt
    as "Transcribe the following speech segment in   into   text"), and one spelled over lines is one line."""
    from click.testing import CliRunner

    from mediapipe_g4.cli import main

    out = CliRunner(env={"G4MEDIA_CACHE": str(tmp_path)}).invoke(
        main, ["plan", str(SAMPLES / "phone_call.wav"), "--model", str(tiny_checkpoint), "--json", "--language", given])
    assert out.exit_code == 0, out.output
    options = json.loads(out.stdout)["options"]
    assert options["language"] == taken and options["notes_language"] == taken


def test_plan_table_of_a_long_recording_shows_the_notes_requests_not_thousands_of_clips():
    """A 3-hour meeting has about 3,300 clips: the table shows the first and last, one line for the rest, every
    notes request and the totals (--json keeps them all)."""
    from mediapipe_g4.planner import Plan, format_plan

    clips = [EngineRequest(kind="transcribe", parts=(), start=3.0 * i, end=3.0 * i + 2.5, tokens=150)
             for i in range(3300)]
    notes = [EngineRequest(kind="notes_section", parts=(), start=0.0, end=5000.0, tokens=30_000),
             EngineRequest(kind="notes_section", parts=(), start=5000.0, end=9900.0, tokens=30_000),
             EngineRequest(kind="notes", parts=(), start=0.0, end=9900.0, tokens=3_000)]
    plan = Plan(duration=9900.0, model="m", context_window=262_144, context_budget=32_768, budget_from="memory",
                exact=True, counts_from="m", requests=(*clips, *notes))
    lines = format_plan(plan).splitlines()
    assert len(lines) < 60, len(lines)
    assert sum(ln.split()[1:2] == ["transcribe"] for ln in lines) == 30  # the first 20 and the last 10
    assert "... 3,270 more transcribe requests, 01:00 to 2:44:29 (--json lists every request)" in map(str.strip, lines)
    assert sum(ln.split()[1:2] == ["notes_section"] for ln in lines) == 2
    assert any(ln.split()[:2] == ["3303", "notes"] for ln in lines)  # numbered as in the plan
    assert len(plan.to_dict()["requests"]) == 3303
    short = replace(plan, requests=(*clips[:31], *notes))
    assert sum(ln.split()[1:2] == ["transcribe"] for ln in format_plan(short).splitlines()) == 31  # all shown


def test_a_long_meeting_is_cut_into_sections_of_about_equal_size():
    """Sections filled to the brim left a 3-hour meeting's last one a fifth of the others, and its summary weighed
    as much as theirs in the notes. Here the timeline holds about 2.2 budgets: three sections of about equal size."""
    segments, _ = _timeline(180)
    timeline = build_timeline(segments)
    counter = TokenCounter()
    options = PlanOptions(section_max_new_tokens=500)
    (whole,) = plan_notes(timeline, 10**7, options, counter)
    budget = int(whole.tokens / 2.2) + options.section_max_new_tokens
    sections = [r for r in plan_notes(timeline, budget, options, counter) if r.kind == "notes_section"]
    assert len(sections) == 3
    assert all(r.tokens + r.settings.max_new_tokens <= budget for r in sections)
    spans = [r.end - r.start for r in sections]
    assert min(spans) > 0.75 * max(spans), spans  # filled to the brim: 4819, 4809 and 1169 s


def test_the_notes_prompt_reads_as_sent(processor):
    """Through the Gemma 4 template (text parts trimmed and joined with nothing between them; a system turn's
    content written as it is, a list as its repr): the system text leads the user turn as plain text, and the
    instruction and the transcript are apart."""
    from mediapipe_g4.prompts import NOTES_PROMPT, NOTES_SYSTEM

    segments, _ = _timeline(2)
    (request,) = plan_notes(build_timeline(segments), 1_000_000, PlanOptions(), TokenCounter())
    prompt = processor.apply_chat_template(request.messages(with_media=False), tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.startswith(f"<bos><|turn>user\n{NOTES_SYSTEM}\n\n{NOTES_PROMPT}\n\n[00:00] S1:")
    assert request.parts[0].text == NOTES_PROMPT  # the parts are as planned; merged as sent


def test_notes_written_by_another_model_are_planned_for_it(decoded, monkeypatch):
    """`--transcribe-model` small, `--model` big: the notes budget and batch are the big model's, in the memory the
    small one (still loaded) leaves; they were planned for the small model's shape and the whole memory."""
    from dataclasses import replace as changed

    from mediapipe_g4 import memory as mem
    from mediapipe_g4 import transformers_engine

    small = changed(mem.GEMMA4_12B, name="small", params=4e9, sixteen_bit_params=1e9, context_window=131_072)
    shapes = {"google/small": small, "google/big": mem.GEMMA4_12B}
    monkeypatch.setattr(transformers_engine, "model_shape", lambda name, config=None: shapes[name])
    gpu = mem.DeviceMemory("cpu", "test", 48 * mem.GB, 40 * mem.GB)
    monkeypatch.setattr(mem, "device_memory", lambda device: gpu)
    d = decoded["phone_call.wav"]

    def plan(**kw):
        return make_plan(d["waveform"], d["turns"], model="google/small", dtype="bfloat16", **kw)

    both = plan(notes_model="google/big")
    left = changed(gpu, available=gpu.available - mem.weights_bytes(small, "bfloat16", None))
    assert both.context_budget == mem.default_context_budget(mem.GEMMA4_12B, left, dtype="bfloat16")[0]
    assert both.context_window == 262_144 and both.context_budget < plan().context_budget
    assert plan(notes_model="google/small").context_budget == plan().context_budget
    notes = [r for r in both.requests if r.kind == "notes"]
    assert notes and both.memory["notes_peak_gb"] == round(
        (mem.peak_bytes(mem.GEMMA4_12B, max(r.tokens + r.settings.max_new_tokens for r in notes), dtype="bfloat16")
         + mem.weights_bytes(small, "bfloat16", None)) / mem.GB, 1)


def test_a_model_that_does_not_fit_is_said_plainly(decoded, monkeypatch, tmp_path):
    """`needs about 28 GB` beside `30 GB available` read as a contradiction (the peak is held to 90 % of what is
    free); an E4B estimated as the 12B was told to pick the E4B; --quantize on a CPU planned as if it would run."""
    from dataclasses import replace as changed

    from mediapipe_g4 import memory as mem

    thirty = mem.DeviceMemory("cpu", "CPU", 32 * mem.GB, 30 * mem.GB)
    budget, warning = mem.default_context_budget(mem.GEMMA4_12B, thirty, dtype="bfloat16")
    need = mem.peak_bytes(mem.GEMMA4_12B, mem.MIN_CONTEXT, dtype="bfloat16")
    assert need <= thirty.available < need / 0.9  # the case: the peak fits what is free, not with a tenth to spare
    assert f"needs about {need / 0.9 / mem.GB:.0f} GB free" in warning and "--model google/gemma-4-E4B-it" in warning
    e4b = changed(mem.GEMMA4_12B, name="google/gemma-4-E4B-it")
    assert "E4B" not in mem.default_context_budget(e4b, thirty, dtype="bfloat16")[1].split(":", 1)[1]

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: no config for the E4B here
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(mem, "device_memory", lambda device: thirty)
    d = decoded["phone_call.wav"]
    plan = make_plan(d["waveform"], d["turns"], model="google/gemma-4-E4B-it", dtype="bfloat16")
    assert any("estimated for the 12B" in w for w in plan.warnings)
    assert not any("pick a smaller model" in w or "needs about" in w for w in plan.warnings), plan.warnings
    assert plan.budget_from == "a fallback: the 12B it was estimated as does not fit"
    quantized = make_plan(d["waveform"], d["turns"], model="google/gemma-4-12B-it", quantize="4bit")
    assert any(w.startswith("--quantize 4bit needs a CUDA GPU") for w in quantized.warnings), quantized.warnings
    # where the budget came from, said as it is: "from memory" stood beside "DOES NOT FIT"
    whole = make_plan(d["waveform"], d["turns"], model="google/gemma-4-12B-it", dtype="bfloat16")
    assert whole.budget_from == "a fallback: the model does not fit"
    monkeypatch.setattr(mem, "device_memory", lambda device: mem.DeviceMemory("cpu", "CPU", 96 * mem.GB, 90 * mem.GB))
    roomy = make_plan(d["waveform"], d["turns"], model="google/gemma-4-12B-it", dtype="bfloat16")
    assert roomy.budget_from == "the model's window" and roomy.context_budget == 262_144


@pytest.mark.parametrize("copies", [600, 190])  # longer than the first cut, and shorter (it was not cut at all)
def test_the_notes_repair_fits_the_budget_in_any_script(processor, copies):
    """The repair request shows the bad answer cut at three characters a token: a Chinese answer came to about three
    times that, past a small budget."""
    from fake_engine import ScriptedEngine

    from mediapipe_g4.pipeline import write_notes

    waveform = np.zeros(60 * SAMPLE_RATE, dtype=np.float32)
    plan = make_plan(waveform, [SpeakerTurn(0.0, 50.0, "S1")], processor=processor,
                     options=PlanOptions(context_tokens=8192))
    segments = [Segment(0.0, 50.0, "S1", "我们下周二发布支付重试功能。")]
    answer = '{"summary": "' + "我们决定下周二发布支付重试功能，然后更新文档。" * copies  # cut off: no closing brace
    engine = ScriptedEngine({"notes": answer, "notes_repair": json.dumps({"summary": "发布。"})})
    counter = TokenCounter(processor)
    notes = write_notes(engine, segments, [], {"S1": "Speaker 1"}, plan, counter, None)
    assert notes["status"] == "ok"
    (repair,) = [r for r in engine.seen if r.kind == "notes_repair"]
    assert counter.count(repair) + repair.settings.max_new_tokens <= plan.context_budget
    assert counter.count(repair) > plan.context_budget // 4  # and the answer is shown, not cut to nothing
