"""The whole pipeline on the samples with a scripted engine: transcript, names, notes, outputs, resume."""

from __future__ import annotations

import json
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import pytest
from conftest import truth
from fake_engine import ScriptedEngine
from standup_script import NOTES, standup_engine_script

from mediapipe_g4.diarize import DiarizationOptions
from mediapipe_g4.engine import AudioPart, TextPart
from mediapipe_g4.errors import G4Error
from mediapipe_g4.pipeline import RunOptions, process_recording
from mediapipe_g4.planner import PlanOptions
from mediapipe_g4.writers import write_outputs


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # decoded audio, keyframes and turns shared by these tests


def run(sample: Path, cache: Path, script, **options):
    engine = ScriptedEngine(script)
    made = []

    def factory(model):
        made.append(model)
        return engine

    result = process_recording(sample, RunOptions(cache_dir=str(cache), **options), factory)
    return result, engine, made


def test_summarize_standup_with_realistic_answers(samples_dir, cache, tmp_path):
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script(inject="<script>alert(1)</script>"),
                            fresh=True)
    assert [s["name"] for s in result["speakers"]] == ["Alice", "Bob", "Carol"]
    assert all(s["evidence"] and s["evidence"][0]["quote"] for s in result["speakers"])
    assert result["segments"] and all(s["speaker"] in {"S1", "S2", "S3"} for s in result["segments"])
    text = " ".join(s["text"] for s in result["segments"])
    assert "retry logic for failed payments" in text and "<turn|>" not in text
    notes = result["notes"]
    assert notes["status"] == "ok"
    owners = {a["owner"] for a in notes["action_items"]}
    assert owners == {"S2", "S3"}  # names resolved to the speakers who hold them
    seg_starts = {s["start"] for s in result["segments"]}
    times = [d["time"] for d in notes["decisions"]] + [a["time"] for a in notes["action_items"]] \
        + [c["start"] for c in notes["chapters"]] + [q["time"] for q in notes["questions"]]
    assert times and all(t in seg_starts for t in times)  # every time is a transcript time
    assert len(result["keyframes"]) == 4
    assert set(result["timings"]) >= {"decode", "keyframes", "diarize", "plan", "transcribe", "names", "notes"}

    out = tmp_path / "out"
    paths = write_outputs(result, out, "standup", ["html", "md", "json", "srt", "vtt", "txt"],
                          media_dir=result["work_dir"])
    html = (out / "standup.html").read_text()
    for section in ("Summary", "Decisions", "Action items", "Chapters", "Transcript", "Slides"):
        assert section in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "data:image/jpeg;base64," in html
    saved = json.loads((out / "standup.json").read_text())
    assert saved["notes"]["summary"] == NOTES["summary"] and len(paths) == 6
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "summarize-fake.html").write_text(html)


def test_render_rewrites_the_reports_from_an_edited_x_json(samples_dir, cache, tmp_path):
    from click.testing import CliRunner

    from mediapipe_g4.cli import main

    result, _, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script())
    out = tmp_path / "out"
    write_outputs(result, out, "standup", ["json", "html"], media_dir=result["work_dir"])
    saved = out / "standup.json"
    data = json.loads(saved.read_text())
    data["speakers"][1]["name"] = "Roberto"  # S2 was named Bob
    data["segments"][0]["text"] = data["segments"][0]["text"].replace("stand-up", "standup sync")
    saved.write_text(json.dumps(data, indent=1), encoding="utf-8-sig")  # as some editors save it, with a BOM
    edited = saved.read_text()

    res = CliRunner().invoke(main, ["render", str(saved), "--format", "html,srt,json"])
    assert res.exit_code == 0, res.output
    html = (out / "standup.html").read_text()
    assert "Roberto" in html and "standup sync" in html
    assert html.count("data:image/jpeg;base64,") >= 4  # the slides, found in the work folder the X.json names
    srt = (out / "standup.srt").read_text()
    assert "Roberto: " in srt and "Bob: " not in srt
    assert saved.read_text() == edited  # the input itself is not rewritten

    # Elsewhere, with the recording beside it: the page plays it; json too, so the folder stands alone.
    away = tmp_path / "shared"
    away.mkdir()
    (away / "standup.mp4").write_bytes((samples_dir / "standup.mp4").read_bytes())
    res = CliRunner().invoke(main, ["render", str(saved), "-o", str(away), "--format", "all"])
    assert res.exit_code == 0, res.output
    assert sorted(p.suffix for p in away.iterdir()) == [".html", ".json", ".md", ".mp4", ".srt", ".txt", ".vtt"]
    assert 'id="player"' in (away / "standup.html").read_text()


def test_render_of_a_result_whose_work_folder_is_gone_says_so_once(samples_dir, cache, tmp_path):
    from click.testing import CliRunner

    from mediapipe_g4.cli import main

    result, _, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script())
    write_outputs(result, tmp_path, "standup", ["json"], media_dir=result["work_dir"])
    data = json.loads((tmp_path / "standup.json").read_text())
    data["work_dir"] = str(tmp_path / "cleaned")
    (tmp_path / "standup.json").write_text(json.dumps(data))
    res = CliRunner().invoke(main, ["render", str(tmp_path / "standup.json")])
    assert res.exit_code == 0, res.output
    assert "4 of 4 slide images are gone" in res.output and "cannot embed" not in res.output
    assert "Slide 4" in (tmp_path / "standup.html").read_text()
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".html", ".json", ".md", ".srt", ".vtt"]


def test_render_rewrites_the_reports_there_are_and_keeps_same_named_results_apart(samples_dir, cache, tmp_path):
    from click.testing import CliRunner

    from mediapipe_g4.cli import main

    result, _, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script())
    for folder in ("a", "b"):
        write_outputs(result, tmp_path / folder, "standup", ["json", "txt"], media_dir=result["work_dir"])
    res = CliRunner().invoke(main, ["render", str(tmp_path / "a" / "standup.json")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["standup.json", "standup.txt"]  # the TXT, again
    res = CliRunner().invoke(main, ["render", str(tmp_path / "a" / "standup.json"), str(tmp_path / "b" / "standup.json"),
                                    "-o", str(tmp_path / "out"), "--format", "srt"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["standup.json-2.srt", "standup.json.srt"]


@pytest.mark.parametrize("cut_off", [True, False])
def test_invalid_notes_get_one_repair(samples_dir, cache, cut_off):
    """One repair request; notes that ran out of tokens are asked for again shorter, from their beginning (a long
    answer's tail would lose the summary), others are shown from their end (where the JSON is)."""
    head = "Here are the notes: " + "x" * 13_000
    bad = head + ('{"summary": "x", "decisions": [' if cut_off else "no JSON here")
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script([bad, json.dumps(NOTES)]),
                            fresh=True)
    assert result["notes"]["status"] == "ok"
    assert [r.kind for r in engine.seen if r.kind.startswith("notes")] == ["notes", "notes_repair"]
    prompt = engine.seen[-1].parts[0].text
    assert ("Here are the notes: " in prompt) == cut_off and ("but shorter, so that all of it fits" in prompt) == cut_off
    assert ("no JSON here" in prompt) != cut_off
    assert "Write in" not in prompt  # no language given: the repair prompt is as it was


def test_the_notes_repair_asks_for_the_notes_language(samples_dir, cache):
    # A rewrite, shorter above all, could drift back to the prompt's English.
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script(["no JSON", json.dumps(NOTES)]),
                            fresh=True, plan=PlanOptions(language="German"))
    assert result["notes"]["status"] == "ok"
    notes, repair = [r.parts[0].text for r in engine.seen if r.kind.startswith("notes")]
    line = "Write in German (keep any JSON keys as named above)."
    assert notes.endswith(line) and f"keeping its content. {line} Output only the JSON." in repair


def test_notes_with_a_json_slip_need_no_second_answer(samples_dir, cache):
    slipped = json.dumps(NOTES, indent=1)[:-1].rstrip() + ",\n}"  # a trailing comma before the closing brace
    with pytest.raises(json.JSONDecodeError):
        json.loads(slipped)
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script([slipped]), fresh=True)
    assert result["notes"]["status"] == "ok" and result["notes"]["summary"] == NOTES["summary"]
    assert [r.kind for r in engine.seen if r.kind.startswith("notes")] == ["notes"]


def test_notes_that_stay_invalid_are_reported_and_the_rest_is_kept(samples_dir, cache, tmp_path):
    script = standup_engine_script(["no json", "still no json"])
    result, _, _ = run(samples_dir / "standup.mp4", cache, script, fresh=True)
    assert result["notes"]["status"] == "failed" and "could not be read, twice" in result["notes"]["error"]
    assert result["segments"] and result["speakers"]
    write_outputs(result, tmp_path, "standup", ["html", "md"], media_dir=result["work_dir"])
    html = (tmp_path / "standup.html").read_text()
    assert "not produced" in html.lower() and "retry logic" in html


def test_empty_notes_get_the_repair_and_then_fail_with_the_reason(samples_dir, cache):
    # All fields empty was an "ok" with no notes in it: a half-empty success for a meeting full of speech.
    empty = json.dumps({"summary": "", "decisions": [], "action_items": [], "chapters": [], "questions": []})
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script([empty, empty]), fresh=True)
    assert [r.kind for r in engine.seen if r.kind.startswith("notes")] == ["notes", "notes_repair"]
    assert result["notes"]["status"] == "failed" and "empty" in result["notes"]["error"]


def test_every_model_step_shows_its_progress(samples_dir, cache):
    # The speaker names (one long request on a CPU) showed nothing: the display sat at "transcribe 15/15".
    steps = []
    engine = ScriptedEngine(standup_engine_script())
    process_recording(samples_dir / "standup.mp4", RunOptions(cache_dir=str(cache), fresh=True), lambda m: engine,
                      hook=lambda step, done, total: steps.append(step))
    assert {"transcribe", "names", "notes"} <= set(steps)


def test_names_override_and_transcribe_only(samples_dir, cache):
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script(), fresh=True,
                            names=(("S1", "Dana"),), summarize=False)
    assert result["speakers"][0]["name"] == "Dana"
    assert result["notes"]["status"] == "skipped"
    assert {r.kind for r in engine.seen} == {"transcribe"}


def test_the_vocabulary_is_in_every_prompt_and_in_the_result(samples_dir, cache, tmp_path):
    from click.testing import CliRunner

    from mediapipe_g4.cli import main

    terms = ("Priya Raman", "Kubernetes")
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script(), fresh=True,
                            plan=PlanOptions(vocabulary=terms))
    kinds = set()
    for request in engine.seen:
        text = " ".join(p.text for p in request.parts if isinstance(p, TextPart))
        assert "spelled as they should be written: Priya Raman, Kubernetes." in text, request.kind
        kinds.add(request.kind)
    assert kinds == {"transcribe", "names", "notes"}
    first = engine.seen[0].parts
    assert isinstance(first[0], TextPart) and isinstance(first[1], AudioPart)  # the clip still follows the text
    assert result["options"]["plan"]["vocabulary"] == terms

    # The command line: a list, or a file of one term a line; the result says what was given.
    terms_file = tmp_path / "terms.txt"
    terms_file.write_text("Priya Raman\nkubernetes\n")
    from mediapipe_g4 import cli

    assert cli._vocabulary(f"@{terms_file}") == ("Priya Raman", "kubernetes")
    terms_file.write_text("# our team\nPriya\n  # products\nOKR, Kubernetes\n")  # a file's # lines are comments
    assert cli._vocabulary(f"@{terms_file}") == ("Priya", "OKR", "Kubernetes")
    terms_file.write_text("# nothing yet\n")
    with pytest.raises(G4Error, match="holds no terms"):
        cli._vocabulary(f"@{terms_file}")
    with pytest.raises(G4Error, match="holds no terms; separate them with commas"):
        cli._vocabulary(" , ,")
    res = CliRunner().invoke(main, ["plan", str(samples_dir / "standup.mp4"), "--vocabulary", "@" + str(tmp_path / "x")])
    assert res.exit_code == 1 and "--vocabulary: cannot read" in res.output


def test_second_run_reuses_every_answer_without_loading_a_model(samples_dir, cache):
    first, _, _ = run(samples_dir / "phone_call.wav", cache, standup_engine_script(), fresh=True)
    second, engine, made = run(samples_dir / "phone_call.wav", cache, standup_engine_script())
    assert made == [] and engine.calls == 0
    assert second["segments"] == first["segments"] and second["notes"] == first["notes"]


def test_sections_then_whole_when_the_meeting_does_not_fit(samples_dir, cache):
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script(), fresh=True,
                            plan=PlanOptions(context_tokens=1400, notes_max_new_tokens=400, section_max_new_tokens=150,
                                             notes_image_tokens=280))
    kinds = [r.kind for r in engine.seen]
    assert kinds.count("notes_section") >= 2 and kinds[-1] == "notes"
    assert result["notes"]["status"] == "ok"


def test_notes_sections_go_to_the_model_as_many_at_once_as_memory_holds_for_them(samples_dir, cache, monkeypatch):
    """A long meeting's notes sections fill the context budget; they went to the model in the batch sized for 30 s
    clips (4 on a CPU, up to 64 on a GPU), several times the memory the plan had checked for one."""
    from mediapipe_g4 import memory

    sizes = iter([8, 1])  # what memory holds: 8 clips at once, 1 notes request (the plan asks in that order)
    monkeypatch.setattr(memory, "default_batch_size", lambda shape, mem, tokens, **kw: next(sizes))
    engine = ScriptedEngine(standup_engine_script())
    batches: list[list[str]] = []
    answer = engine.generate

    def generate(requests, hook=None):
        batches.append([r.kind for r in requests])
        return answer(requests, hook)

    engine.generate = generate
    result = process_recording(samples_dir / "standup.mp4", RunOptions(
        cache_dir=str(cache), fresh=True, plan=PlanOptions(context_tokens=1400, notes_max_new_tokens=400,
                                                            section_max_new_tokens=150)), lambda model: engine)
    sections = [b for b in batches if "notes_section" in b]
    assert sum(map(len, sections)) >= 2 and all(len(b) == 1 for b in sections), batches
    assert max(len(b) for b in batches if "transcribe" in b) > 1  # the clips still go several at once
    assert result["notes"]["status"] == "ok"


def test_recording_without_audio_is_a_clear_error(media_corpus, cache):
    from mediapipe_g4.errors import MediaError

    with pytest.raises(MediaError, match="no audio track"):
        run(media_corpus["silent_video"], cache, standup_engine_script())


def test_a_cut_off_recording_is_said_in_the_result_and_the_reports(media_corpus, samples_dir, cache, tmp_path,
                                                                     caplog):
    # The file states 6 s; the first half of its bytes decode to about 3 s (a recording whose copy or writing
    # stopped).
    result, _, _ = run(media_corpus["cut_off"], cache, standup_engine_script())
    source = result["source"]
    assert source["duration"] == pytest.approx(6.0, abs=0.1) and source["audio_duration"] < 5.0
    assert "could be decoded; the file may be incomplete" in source["warning"]
    assert any("may be incomplete" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    write_outputs(result, tmp_path, "cut_off", ["html", "md"])
    assert "may be incomplete" in (tmp_path / "cut_off.html").read_text()
    assert "**Note:** only the first" in (tmp_path / "cut_off.md").read_text()

    whole, _, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script())
    assert "warning" not in whole["source"]
    assert whole["source"]["audio_duration"] == pytest.approx(whole["source"]["duration"], abs=0.1)


def test_a_first_run_on_a_gpu_loads_the_model_while_diarizing(samples_dir, tmp_path, monkeypatch):
    """On CUDA the transcription model loads in a thread from the start of a first run; a run whose turns are
    cached loads nothing early (its answers may all be cached too)."""
    import threading

    from mediapipe_g4 import pipeline

    monkeypatch.setattr(pipeline, "pick_device", lambda requested=None: "cuda")
    engine = ScriptedEngine(standup_engine_script())
    calls = []
    lock = threading.Lock()

    def factory(model):
        with lock:
            calls.append((model, threading.current_thread().name))
            return engine

    factory.loads_in_process = True
    options = RunOptions(cache_dir=str(tmp_path))
    first = process_recording(samples_dir / "phone_call.wav", options, factory)
    assert calls[0] == (options.asr_model, "g4-load-model")
    assert threading.current_thread().name in {name for _, name in calls[1:]}
    calls.clear()
    second = process_recording(samples_dir / "phone_call.wav", options, factory)
    assert calls == [] and second["segments"] == first["segments"]


def test_keyframes_run_beside_decoding_and_diarization(samples_dir, tmp_path, monkeypatch):
    """Keyframes are found in their own thread while the audio is decoded and diarized; the stages' times
    then overlap, so `total` is the wall time (less than their sum), in the stages' order."""
    import threading

    from mediapipe_g4 import pipeline, video

    threads = {}
    started = threading.Event()
    extract, diarization = video.extract_keyframes, pipeline.load_diarization

    def keyframes(*args, **kwargs):
        threads["keyframes"] = threading.current_thread().name
        started.set()
        return extract(*args, **kwargs)

    def turns(*args, **kwargs):
        threads["diarize"] = threading.current_thread().name
        assert started.wait(10)  # keyframes began before diarization finished
        return diarization(*args, **kwargs)

    monkeypatch.setattr(video, "extract_keyframes", keyframes)
    monkeypatch.setattr(pipeline, "load_diarization", turns)
    result, _, _ = run(samples_dir / "standup.mp4", tmp_path, standup_engine_script())
    assert threads == {"keyframes": "g4-keyframes", "diarize": threading.current_thread().name}
    assert len(result["keyframes"]) == 4
    timings = result["timings"]
    assert list(timings) == [s for s in pipeline.STAGES if s in timings] and list(timings)[-1] == "total"
    assert max(v for k, v in timings.items() if k != "total") <= timings["total"]


def test_a_failed_diarization_stops_the_keyframes(samples_dir, tmp_path, monkeypatch):
    """An error beside the keyframe thread cancels it at its next frame: FFmpeg does not go on decoding."""
    import threading

    from mediapipe_g4 import pipeline, video

    frames_seen = []
    stopped = threading.Event()
    iter_frames = video.iter_frames

    def slow_frames(*args, **kwargs):
        try:
            for frame in iter_frames(*args, **kwargs):
                frames_seen.append(frame.time)
                threading.Event().wait(0.05)  # slow enough that the error comes before the last frame, on a busy CPU
                yield frame
        finally:
            stopped.set()

    def failing_diarization(*args, **kwargs):
        while not frames_seen:  # fail once the keyframe thread is under way
            threading.Event().wait(0.01)
        raise pipeline.MediaError("diarization failed")

    monkeypatch.setattr(video, "iter_frames", slow_frames)
    monkeypatch.setattr(pipeline, "load_diarization", failing_diarization)
    with pytest.raises(pipeline.MediaError, match="diarization failed"):
        run(samples_dir / "standup.mp4", tmp_path, standup_engine_script())
    assert stopped.wait(10)
    assert len(frames_seen) < 64  # the sample has 64 one-second frames: it stopped early
    assert not list(tmp_path.rglob("keyframes/index.json"))  # nothing half-found is kept


@pytest.mark.parametrize("beside", [0, 70])  # keyframe tokens beside each clip: none (the default), or 70
def test_transcription_goes_on_beside_the_keyframes_unless_it_shows_them(samples_dir, tmp_path, monkeypatch, beside):
    """Transcription needs the slides only to put one beside each clip: without, it starts while they are still
    being found, and the notes wait for them; with, it waits for them."""
    import threading

    from mediapipe_g4 import video

    extract = video.extract_keyframes
    transcribing, order = threading.Event(), []

    def keyframes(*args, **kwargs):
        if not beside:
            assert transcribing.wait(10)  # the model began transcribing before the slides were found
        found = extract(*args, **kwargs)
        order.append("keyframes")
        return found

    def answer(request):
        if request.kind == "transcribe":
            transcribing.set()
            order.append("transcribe")
        return script(request)

    script = standup_engine_script()
    monkeypatch.setattr(video, "extract_keyframes", keyframes)
    result, engine, _ = run(samples_dir / "standup.mp4", tmp_path, answer, plan=PlanOptions(keyframe_tokens=beside))
    first_transcription = order.index("transcribe")
    assert (order.index("keyframes") < first_transcription) == bool(beside)
    notes = next(r for r in engine.seen if r.kind == "notes")
    assert len(notes.images) == 4 and len(result["keyframes"]) == 4  # the notes had the slides all the same
    assert all(len(r.images) == bool(beside) for r in engine.seen if r.kind == "transcribe")
    assert result["timings"]["keyframes"] > 0 and list(tmp_path.rglob("keyframes/index.json"))


def test_a_failed_transcription_stops_the_keyframes(samples_dir, tmp_path, monkeypatch):
    import threading

    from mediapipe_g4 import video

    frames_seen, stopped = [], threading.Event()
    iter_frames = video.iter_frames

    def slow_frames(*args, **kwargs):
        try:
            for frame in iter_frames(*args, **kwargs):
                frames_seen.append(frame.time)
                threading.Event().wait(0.05)  # 64 frames: about 3 s, longer than the failure takes
                yield frame
        finally:
            stopped.set()

    def failing(request):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(video, "iter_frames", slow_frames)
    with pytest.raises(RuntimeError, match="the model failed"):
        run(samples_dir / "standup.mp4", tmp_path, failing)
    assert stopped.wait(10) and len(frames_seen) < 64
    assert not list(tmp_path.rglob("keyframes/index.json"))  # nothing half-found is kept


def test_lookahead_prepares_the_next_recording_while_the_model_works(samples_dir, media_corpus, tmp_path,
                                                                      monkeypatch):
    """Several recordings on a GPU: the next one's CPU stages run in a thread while the model works on this one
    (on this thread), only once this one is prepared; the results are those of one recording at a time."""
    import threading
    import time

    from mediapipe_g4 import pipeline
    from mediapipe_g4.errors import MediaError

    options = RunOptions(cache_dir=str(tmp_path / "cache"))
    events = []
    prepare = pipeline.prepare_recording

    def spy(path, *args, **kwargs):
        events.append(("prepare", Path(path).name, threading.current_thread().name, time.perf_counter()))
        out = prepare(path, *args, **kwargs)
        events.append(("prepared", Path(path).name, threading.current_thread().name, time.perf_counter()))
        return out

    monkeypatch.setattr(pipeline, "prepare_recording", spy)
    engine = ScriptedEngine(standup_engine_script())
    generate = engine.generate

    def slow_generate(requests, hook=None):  # the model's turn lasts long enough for the next to be prepared
        events.append(("generate", None, threading.current_thread().name, time.perf_counter()))
        time.sleep(0.02)
        return generate(requests, hook)

    engine.generate = slow_generate
    a, b = samples_dir / "standup.mp4", samples_dir / "phone_call.wav"
    ahead = pipeline.Lookahead(options, lambda model: engine)
    ahead.queue(b)
    first = process_recording(a, options, lambda model: engine, prepared=ahead.prepare(a))
    second = process_recording(b, options, lambda model: engine, prepared=ahead.prepare(b))
    main = threading.current_thread().name
    assert [e[:3] for e in events if e[0] != "generate"] == [
        ("prepare", "standup.mp4", main), ("prepared", "standup.mp4", main),  # A in its turn (nothing was ahead)
        ("prepare", "phone_call.wav", "g4-prepare"), ("prepared", "phone_call.wav", "g4-prepare")]  # B after A
    b_start, b_end = (t for kind, name, _, t in events if name == "phone_call.wav")
    assert any(b_start < t < b_end for kind, _, _, t in events if kind == "generate")  # the model worked on A
    assert {thread for kind, _, thread, _ in events if kind == "generate"} == {main}
    alone, _, _ = run(b, tmp_path / "alone", standup_engine_script())
    assert second["segments"] == alone["segments"] and second["speakers"] == alone["speakers"]
    assert first["keyframes"] and set(second["timings"]) >= {"hash", "decode", "diarize", "transcribe", "total"}

    ahead.queue(media_corpus["silent_video"])  # prepared ahead in vain: its own turn reports the error
    ahead.prepare(b)
    with pytest.raises(MediaError, match="no audio track"):
        ahead.prepare(media_corpus["silent_video"])


def test_a_copy_prepared_ahead_waits_for_the_slides_of_the_one_before(samples_dir, tmp_path, monkeypatch):
    """Two copies of one recording share a work folder: the copy prepared ahead starts only once the first one's
    keyframes, which go on beside its transcription, are found."""
    import shutil
    import threading

    from mediapipe_g4 import pipeline, video

    options = RunOptions(cache_dir=str(tmp_path / "cache"))
    copy = shutil.copy(samples_dir / "standup.mp4", tmp_path / "copy of standup.mp4")
    extract, inside, overlaps, calls = video.extract_keyframes, [], [], []

    def keyframes(*args, **kwargs):
        if inside:
            overlaps.append(threading.current_thread().name)
        inside.append(1)
        calls.append(1)
        if len(calls) == 1:  # the first outlasts its decoding and diarization (~2 s): the copy could start meanwhile
            threading.Event().wait(4)
        try:
            return extract(*args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(video, "extract_keyframes", keyframes)
    engine = ScriptedEngine(standup_engine_script())
    ahead = pipeline.Lookahead(options, lambda model: engine)
    ahead.queue(copy)
    first = process_recording(samples_dir / "standup.mp4", options, lambda model: engine,
                              prepared=ahead.prepare(samples_dir / "standup.mp4"))
    second = process_recording(copy, options, lambda model: engine, prepared=ahead.prepare(copy))
    assert not overlaps and len(first["keyframes"]) == len(second["keyframes"]) == 4


def test_batch_queues_the_next_recording_to_do(samples_dir, media_corpus, tmp_path):
    """One recording at a time, the batch names the next one to prepare ahead: not a broken file, not one done.
    Done means made from this content with the same settings: a run with another speaker count does it again,
    one that only runs differently (a batch size) does not."""
    import dataclasses
    import shutil

    from mediapipe_g4 import pipeline
    from mediapipe_g4.batch import run_batch

    folder = tmp_path / "in"
    folder.mkdir()
    for src, name in [(media_corpus["text_mp4"], "a broken.mp4"), (samples_dir / "phone_call.wav", "b call.wav"),
                      (samples_dir / "standup.mp4", "c standup.mp4")]:
        shutil.copy(src, folder / name)
    options = RunOptions(cache_dir=str(tmp_path / "cache"))
    engine = ScriptedEngine(standup_engine_script())
    queued = []

    def batch():
        ahead = pipeline.Lookahead(options, lambda model: engine)

        def queue(path):
            queued.append(path.name)
            ahead.queue(path)

        def process(path):
            return process_recording(path, options, lambda model: engine, prepared=ahead.prepare(path))

        return run_batch(folder, tmp_path / "out", ["json"], process, ahead=queue, changed=options.changed_from)

    report = batch()
    assert report.failed == 1 and queued == ["b call.wav", "c standup.mp4"]
    assert json.loads((tmp_path / "out" / "c standup.json").read_text())["keyframes"]
    queued.clear()
    again = batch()
    assert len(again.skipped) == 2 and queued == []  # done before: nothing to prepare
    options = dataclasses.replace(options, batch_size=3, fresh=False, device="cpu")
    assert len(batch().skipped) == 2 and queued == []  # how it runs is not what it makes
    options = dataclasses.replace(options, diarization=DiarizationOptions(num_speakers=1))
    redone = batch()
    assert redone.skipped == [] and queued == ["b call.wav", "c standup.mp4"]
    made = json.loads((tmp_path / "out" / "b call.json").read_text())
    assert made["options"]["diarization"]["num_speakers"] == 1 and len(made["speakers"]) == 1
    queued.clear()
    assert len(batch().skipped) == 2 and queued == []


def test_recordings_are_prepared_ahead_only_beside_an_in_process_gpu_model(monkeypatch):
    from mediapipe_g4 import pipeline

    monkeypatch.setattr(pipeline, "pick_device", lambda requested=None: requested or "cuda")
    assert pipeline.prepares_ahead(RunOptions())
    assert not pipeline.prepares_ahead(RunOptions(device="cpu"))  # the model needs every core
    assert not pipeline.prepares_ahead(RunOptions(engine="openai", server="http://x/v1"))  # workers do it there


def test_background_work_hands_over_its_value_or_its_error():
    from mediapipe_g4.pipeline import Background, Cancelled

    seen = []
    assert Background(lambda hook: hook("step", 1, 2) or 42, lambda *a: seen.append(a), "ok").result() == 42
    assert seen == [("step", 1, 2)]

    def broken(hook):
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        Background(broken, lambda *a: None, "broken").result()

    import threading

    go = threading.Event()

    def waits_then_reports(hook):
        go.wait(10)
        hook("step", 1, 1)
        return "finished"

    job = Background(waits_then_reports, lambda *a: None, "cancelled")
    job.cancel()
    go.set()
    with pytest.raises(Cancelled):
        job.result()


def test_the_transformers_factory_loads_each_model_once(tiny_checkpoint, monkeypatch):
    from mediapipe_g4 import transformers_engine
    from mediapipe_g4.errors import ModelError
    from mediapipe_g4.pipeline import make_engine_factory

    factory = make_engine_factory(RunOptions(model=str(tiny_checkpoint)))
    assert factory(str(tiny_checkpoint)) is factory(str(tiny_checkpoint))
    tries = []

    def no_memory(self, model):
        tries.append(model)
        raise ModelError(f"{model} does not fit")

    monkeypatch.setattr(transformers_engine.TransformersEngine, "_load_model", no_memory)
    other = make_engine_factory(RunOptions(model=str(tiny_checkpoint)))
    for _ in range(2):  # a failed load is not tried again
        with pytest.raises(ModelError, match="does not fit"):
            other(str(tiny_checkpoint))
    assert len(tries) == 1


def test_done_before_compares_the_settings_the_x_json_has(tmp_path):
    """A setting newer than an X.json counts as changed only when it is not at its default; a name removed from
    --names counts as a change; where or how fast it ran does not."""
    from mediapipe_g4.batch import already_done

    def options(**kw):
        return RunOptions(names=(("S1", "Alice"),), **kw)

    made = options().outcome()
    del made["diarization"]["sides"]  # an X.json from before that setting
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"source": {"sha256": "abc"}, "options": {**made, "device": "cuda"}}))
    assert already_done(path, "abc", options(device="cpu", batch_size=2).changed_from)
    assert not already_done(path, "abd", options().changed_from)
    assert RunOptions().changed_from(made) == ["names.S1"]  # Alice is no longer asked for
    assert options(audio_track=2).changed_from(made) == ["audio_track"]
    split = options(diarization=DiarizationOptions(sides="split"))
    assert split.changed_from(made) == ["diarization.sides"]  # made before it, so at its default then
    assert options(diarization=DiarizationOptions(sides="auto")).changed_from(made) == []
    assert options(server="http://gpu:8000/v1", engine="openai").changed_from(made) == []  # where it runs
    assert options(served_model="gemma4:e4b").changed_from(made) == ["served_model"]  # which model answers


def test_batch_reports_a_link_to_a_recording_that_is_gone(samples_dir, tmp_path):
    """A link whose recording was moved (or sits on a disk not mounted) was left out without a word."""
    from mediapipe_g4.batch import find_recordings

    (tmp_path / "call.wav").symlink_to(samples_dir / "phone_call.wav")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "elsewhere" / "gone.mp4")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "elsewhere" / "notes.txt")  # not a recording's name: not one
    found = dict(find_recordings(tmp_path, recursive=False))
    assert sorted(p.name for p in found) == ["call.wav", "gone.mp4"] and found[tmp_path / "call.wav"] is None
    assert "is a link to" in found[tmp_path / "gone.mp4"] and "which is not there" in found[tmp_path / "gone.mp4"]


@pytest.mark.parametrize("where", ["above", "same", "inside"])
def test_batch_finds_the_recordings_wherever_the_outputs_go(samples_dir, tmp_path, where):
    """Outputs above the recordings (`cd work; g4media batch recs`, -o . by default) or beside them leave out no
    recording; a folder of outputs inside the recordings' folder is left out (a copy beside its report)."""
    import shutil

    from mediapipe_g4.batch import run_batch
    from mediapipe_g4.workdir import file_sha256

    folder = tmp_path / "recs"
    (folder / "notes").mkdir(parents=True)
    shutil.copy(samples_dir / "phone_call.wav", folder / "call.wav")
    shutil.copy(samples_dir / "interview.mp3", folder / "notes" / "interview.mp3")
    out = {"above": tmp_path, "same": folder, "inside": folder / "notes"}[where]
    done = []

    def process(path: Path) -> dict:
        done.append(path.relative_to(folder).as_posix())
        return {"source": {"path": str(path), "name": path.name, "sha256": file_sha256(path)}, "segments": []}

    report = run_batch(folder, out, ["json"], process, recursive=True)
    assert done == (["call.wav"] if where == "inside" else ["call.wav", "notes/interview.mp3"])
    assert report.failed == 0


@pytest.mark.parametrize("stop", ["ctrl-c", "model"])
def test_a_stopped_batch_still_indexes_what_it_did(samples_dir, tmp_path, stop):
    """Ctrl-C (or a model that stops working) part-way: index.html links the recordings done and lists the rest
    as not processed, and the stop itself goes on to the command."""
    import shutil

    from mediapipe_g4.batch import run_batch
    from mediapipe_g4.errors import ModelError
    from mediapipe_g4.workdir import file_sha256

    folder = tmp_path / "recs"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        shutil.copy(samples_dir / "phone_call.wav", folder / name)
    out = tmp_path / "out"

    def process(path: Path) -> dict:
        if path.name == "b.wav":
            raise KeyboardInterrupt if stop == "ctrl-c" else ModelError("the model server went away")
        return {"source": {"path": str(path), "name": path.name, "sha256": file_sha256(path)}, "segments": []}

    with pytest.raises(KeyboardInterrupt if stop == "ctrl-c" else ModelError):
        run_batch(folder, out, ["json"], process)
    page = (out / "index.html").read_text()
    assert "3 recordings: 1 done, 2 not processed" in page
    assert 'href="a.json"' in page and 'href="b.json"' not in page
    why = "the batch was interrupted" if stop == "ctrl-c" else "the batch stopped: the model server went away"
    assert page.count(f"Not processed: {why}") == 2
    assert not list(out.glob(".*.part"))


def test_a_recording_named_index_does_not_write_over_the_batch_index(samples_dir, tmp_path):
    """index.wav at the top of the folder: its report is index.wav.html, and index.html is the batch's index,
    linking it; in a sub-folder (no index there) it keeps its plain name."""
    import shutil

    from mediapipe_g4.batch import run_batch
    from mediapipe_g4.workdir import file_sha256

    folder = tmp_path / "recs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(samples_dir / "phone_call.wav", folder / "index.wav")
    shutil.copy(samples_dir / "phone_call.wav", folder / "sub" / "index.wav")
    out = tmp_path / "out"

    def process(path: Path) -> dict:
        return {"source": {"path": str(path), "name": path.name, "sha256": file_sha256(path), "duration": 38.1},
                "segments": [{"start": 0, "end": 2, "speaker": "S1", "text": "The only words."}]}

    report = run_batch(folder, out, ["html"], process, recursive=True)
    assert report.failed == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html")) == [
        "index.html", "index.wav.html", "sub/index.html"]
    index = (out / "index.html").read_text()
    assert 'href="index.wav.html"' in index and "The only words." not in index
    assert "The only words." in (out / "index.wav.html").read_text()
    assert len(run_batch(folder, out, ["html"], process, recursive=True).skipped) == 2  # done: found again


def test_batch_output_sub_folder_that_is_a_file_is_said_as_such(samples_dir, tmp_path):
    """OUT/sub is a file, so sub/call.wav's outputs cannot be written: the failure says that, not that its X.json
    "is there but does not read as JSON"."""
    import shutil

    from mediapipe_g4.batch import run_batch
    from mediapipe_g4.workdir import file_sha256

    folder = tmp_path / "recs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(samples_dir / "phone_call.wav", folder / "sub" / "call.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file")

    def process(path: Path) -> dict:
        return {"source": {"path": str(path), "name": path.name, "sha256": file_sha256(path)}, "segments": []}

    (failed,) = run_batch(folder, out, ["json"], process, recursive=True).entries
    assert failed["status"] == "failed" and f"Cannot write {out / 'sub'}: Not a directory" in failed["error"], \
        failed["error"]
    assert "does not read as JSON" not in failed["error"]


def test_batch_names_apart_the_outputs_of_one_folder_and_keeps_an_edited_x_json_that_broke(samples_dir, tmp_path):
    import shutil

    from mediapipe_g4.batch import run_batch
    from mediapipe_g4.workdir import file_sha256

    folder = tmp_path / "recs"
    folder.mkdir()
    shutil.copy(samples_dir / "phone_call.wav", folder / "meeting.wav")
    shutil.copy(samples_dir / "interview.mp3", folder / "meeting.mp3")
    shutil.copy(samples_dir / "interview.mp3", folder / "standup.mp3")
    out = tmp_path / "out"
    done = []

    def process(path: Path) -> dict:
        done.append(path.name)
        return {"source": {"path": str(path), "name": path.name, "sha256": file_sha256(path)}, "segments": []}

    first = run_batch(folder, out, ["json"], process)
    assert sorted(done) == ["meeting.mp3", "meeting.wav", "standup.mp3"] and first.failed == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["meeting.mp3.json", "meeting.wav.json", "standup.json"]
    edited = json.loads((out / "meeting.wav.json").read_text())
    edited["segments"] = [{"start": 0, "end": 1, "speaker": "S1", "text": "HAND EDIT"}]
    (out / "meeting.wav.json").write_text(json.dumps(edited), encoding="utf-8-sig")  # saved with a BOM: still done
    (out / "standup.json").write_text('{"source": {"sha256": ')  # an edit gone wrong
    again = run_batch(folder, out, ["json"], process)
    assert len(done) == 3 and len(again.skipped) == 2  # the two meetings were done; nothing is redone
    (failed,) = [e for e in again.entries if e["status"] == "failed"]
    assert "standup.json is there but does not read as JSON" in failed["error"]
    assert (out / "standup.json").read_text() == '{"source": {"sha256": '
    assert "HAND EDIT" in (out / "meeting.wav.json").read_text(encoding="utf-8-sig")
    # A new recording of the same name, and a broken file: the one done keeps its outputs' names.
    (out / "standup.json").unlink()
    run_batch(folder, out, ["json"], process)  # standup.mp3 done again (its X.json was gone), as "standup"
    shutil.copy(samples_dir / "phone_call.wav", folder / "standup.wav")
    (folder / "standup.m4a").write_bytes(b"")
    third = run_batch(folder, out, ["json"], process)
    assert done[-1] == "standup.wav" and len(third.skipped) == 3
    assert sorted(p.name for p in out.glob("*.json")) == ["meeting.mp3.json", "meeting.wav.json", "standup.json",
                                                          "standup.wav.json"]


@pytest.mark.parametrize("error, says", [
    ("server", "the model failed: the model server at http://gpu:8000/v1 kept failing (HTTP 500)"),
    # not one of ours: the model's library (a CUDA error), or a bug; it lost the finished transcript
    ("cuda", "the model failed: RuntimeError: CUDA error: an illegal memory access was encountered"),
])
def test_a_model_that_fails_on_the_notes_costs_the_notes_not_the_transcript(samples_dir, cache, error, says):
    from mediapipe_g4.errors import ModelError

    answers = standup_engine_script()

    def script(request):
        if request.kind.startswith("notes") and error == "server":
            raise ModelError("the model server at http://gpu:8000/v1 kept failing (HTTP 500)")
        if request.kind.startswith("notes"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return answers(request)

    result, _, _ = run(samples_dir / "standup.mp4", cache, script, fresh=True)
    assert result["segments"] and [s["name"] for s in result["speakers"]] == ["Alice", "Bob", "Carol"]
    assert result["notes"] == {"status": "failed", "error": says,
                               "summary": "", "decisions": [], "action_items": [], "chapters": [], "questions": []}


@pytest.mark.parametrize("empty", ["notes_section", "notes_merge"])
def test_notes_over_empty_summaries_are_no_notes(samples_dir, cache, empty):
    """A long meeting's parts whose summaries (or merged summaries) all came back empty (a thought cut off at the
    answer's budget): notes "ok" over nothing would be made up; they fail and say why."""
    answers = standup_engine_script()

    long = "Bob finished the retry logic and will write the integration tests. " * 25  # too long for one prompt

    def script(request):
        if request.kind == empty:
            return ""
        return long if request.kind.startswith("notes_") else answers(request)

    result, engine, _ = run(samples_dir / "standup.mp4", cache, script, fresh=True,
                            plan=PlanOptions(context_tokens=1500))
    assert sum(r.kind == empty for r in engine.seen) >= 1
    assert not any(r.kind == "notes" for r in engine.seen)
    assert result["notes"]["status"] == "failed"
    assert result["notes"]["error"].startswith("the model's summaries of the meeting's parts all came back empty")


def test_notes_that_cannot_fit_the_budget_say_so_and_keep_the_transcript(samples_dir, cache):
    """A budget no notes fit: the transcript is made (the run stopped before one clip), the notes say why."""
    result, engine, _ = run(samples_dir / "standup.mp4", cache, standup_engine_script(), fresh=True,
                            plan=PlanOptions(context_tokens=300))
    assert result["segments"] and not any(r.kind.startswith("notes") for r in engine.seen)
    assert result["notes"]["status"] == "failed"
    assert result["notes"]["error"].startswith("the notes could not be made: a context budget of 300 tokens")


def test_a_model_that_answers_every_clip_with_nothing_is_said(samples_dir, cache, caplog):
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        result, _, _ = run(samples_dir / "standup.mp4", cache, lambda request: "", fresh=True, summarize=False)
    assert result["segments"] == []
    assert "clips of speech came back empty from the model" in caplog.text and "--fresh" in caplog.text


def test_speaker_turns_found_by_other_code_are_found_again(tmp_path, monkeypatch):
    """The turns' cache file is keyed by the code that finds them too: after an upgrade that changes the
    diarizer, a rerun finds the turns again instead of reusing the old ones."""
    from mediapipe_g4 import pipeline, workdir

    options = DiarizationOptions()
    assert pipeline.turns_path(tmp_path, options) == pipeline.turns_path(tmp_path, options)
    assert pipeline.turns_path(tmp_path, options) != pipeline.turns_path(tmp_path, DiarizationOptions(num_speakers=2))
    module = tmp_path / "diarize.py"
    module.write_text("STEP = 1\n")
    real = workdir._module_file
    monkeypatch.setattr(workdir, "_module_file", lambda name: module if name == "diarize" else real(name))
    try:
        workdir.code_key.cache_clear()
        before = pipeline.turns_path(tmp_path, options)
        module.write_text("STEP = 2\n")  # a release that changes the diarizer
        workdir.code_key.cache_clear()
        assert pipeline.turns_path(tmp_path, options) != before
    finally:
        workdir.code_key.cache_clear()
    for name in pipeline.TURNS_CODE:  # each names a module that exists (a renamed one would key nothing)
        assert name.startswith("pkg:") or workdir._module_file(name).is_file()
    with pytest.raises(LookupError):
        workdir._module_file("no_such_module")


def test_speaker_turns_of_other_code_are_removed_when_new_ones_are_written(tmp_path, monkeypatch):
    """Turns found by an older version are never read again: writing the new ones removes them (the old bare-key
    names too), while the turns of other settings found by this version stay."""
    from mediapipe_g4 import pipeline
    from mediapipe_g4.records import Diarization, SpeakerTurn

    options, other = DiarizationOptions(), DiarizationOptions(num_speakers=2)
    found = Diarization(duration=3.0, speakers=("S1",), turns=(SpeakerTurn(0.0, 3.0, "S1"),))
    kept = pipeline.turns_path(tmp_path, other)
    stale = [tmp_path / "turns-0123456789abcdef.json", tmp_path / "turns-0123456789ab-0123456789abcdef.json"]
    for path in [kept, *stale]:
        path.write_text(json.dumps(found.to_dict()))
    monkeypatch.setattr(pipeline, "find_speakers", lambda *a: found)
    assert pipeline.load_diarization(None, tmp_path, options, lambda *a: None, None) == found
    assert sorted(tmp_path.glob("turns-*.json")) == sorted([kept, pipeline.turns_path(tmp_path, options)])
    assert pipeline.cached_diarization(tmp_path, options) == found


def test_a_length_ffmpeg_only_guessed_is_replaced_by_the_audios_own(samples_dir, cache, tmp_path):
    """Raw AAC (and a VBR MP3 without its header) has no length but FFmpeg's guess from the bitrate, found up to 13
    times too long: X.json said that length (the report's timeline was scaled to it) and a warning that the file
    may be incomplete."""
    import subprocess

    from mediapipe_g4 import media

    raw = tmp_path / "call.aac"
    subprocess.run([media.ffmpeg_binary(), "-v", "error", "-i", str(samples_dir / "phone_call.wav"), "-c:a", "aac",
                    "-f", "adts", str(raw)], check=True)
    result, _, _ = run(raw, cache, lambda request: "Hello.", summarize=False, slides=False)
    source = result["source"]
    assert media.probe(raw).duration > 38.5 and source["duration"] == source["audio_duration"] < 38.5
    assert "warning" not in source


def test_cached_speaker_turns_of_another_length_of_audio_are_found_again(tmp_path, monkeypatch):
    """Turns found when the audio decoded shorter (a WAV whose header said less, before that was read whole) were
    reused, and the transcript still stopped where the old decoding had."""
    import numpy as np

    from mediapipe_g4 import pipeline
    from mediapipe_g4.records import Diarization, SpeakerTurn

    old = Diarization(duration=10.0, speakers=("S1",), turns=(SpeakerTurn(0.0, 10.0, "S1"),))
    new = Diarization(duration=38.0, speakers=("S1", "S2"), turns=(SpeakerTurn(0.0, 38.0, "S1"),))
    found = []
    monkeypatch.setattr(pipeline, "find_speakers", lambda *a: found.append(1) or new)
    waveform = np.zeros(38 * 16_000, dtype=np.float32)
    assert pipeline.load_diarization(waveform, tmp_path, DiarizationOptions(), lambda *a: None, old) == new
    assert found == [1]
    assert pipeline.load_diarization(waveform, tmp_path, DiarizationOptions(), lambda *a: None, new) == new
    assert found == [1]  # turns of this length are reused


@pytest.mark.parametrize("damage", ["garbage", '{"turns": []}', "[1]", '{"duration": 1, "speakers": 5, "turns": 3}'])
def test_damaged_work_files_are_made_again_not_an_error(tmp_path, damage, caplog):
    """Speaker turns or an answer file damaged in the work folder (a disk error, a hand edit, an older version's
    shape) count as missing: found or asked for again, with a warning. They ended every later run with an
    "unexpected JSONDecodeError/KeyError/TypeError"."""
    from mediapipe_g4 import pipeline
    from mediapipe_g4.answers import CachedEngine, request_key
    from mediapipe_g4.engine import EngineRequest

    options = DiarizationOptions()
    pipeline.turns_path(tmp_path, options).write_text(damage)
    assert pipeline.cached_diarization(tmp_path, options) is None
    assert "ignoring the damaged speaker turns" in caplog.text
    request = EngineRequest("names", (TextPart("Who is who?"),))
    cached = CachedEngine(lambda: ScriptedEngine(lambda request: "fresh answer"), tmp_path / "answers")
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / f"{request_key(request)}.json").write_text(damage.replace("turns", "answer"))
    assert cached.generate([request]) == ["fresh answer"]


def test_a_speaker_count_that_could_not_be_met_is_said(tmp_path, monkeypatch, caplog):
    """`--speakers 1000` on a two-person call gave 22 speakers without a word."""
    from mediapipe_g4 import pipeline
    from mediapipe_g4.records import Diarization, SpeakerTurn

    found = Diarization(duration=3.0, speakers=("S1", "S2"), turns=(SpeakerTurn(0.0, 1.0, "S1"),
                                                                     SpeakerTurn(1.0, 3.0, "S2")))
    monkeypatch.setattr(pipeline, "find_speakers", lambda *a: found)
    for wanted, said in ((2, False), (5, True)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="mediapipe_g4"):
            pipeline.load_diarization(None, tmp_path, DiarizationOptions(num_speakers=wanted), lambda *a: None, None)
        assert ("--speakers 5: this recording's speech was told apart into only 2" in caplog.text) == said


def test_a_recording_that_states_no_length_gets_the_audios_own(samples_dir, cache, tmp_path):
    """A browser's recording (MediaRecorder WebM) states no duration: X.json said 0 s, and `eval` gave no speed."""
    import subprocess

    from mediapipe_g4 import media

    webm = tmp_path / "browser.webm"
    with webm.open("wb") as out:  # written to a pipe, as a browser streams it: no duration in the header
        subprocess.run([media.ffmpeg_binary(), "-v", "error", "-i", str(samples_dir / "phone_call.wav"), "-c:a",
                        "libopus", "-f", "webm", "pipe:1"], check=True, stdout=out)
    assert media.probe(webm).duration == 0.0
    result, _, _ = run(webm, cache, lambda request: "Hello.", summarize=False, slides=False)
    source = result["source"]
    assert source["duration"] == source["audio_duration"] == pytest.approx(truth("phone_call.wav")["duration"],
                                                                            abs=0.1)


def test_a_batch_run_again_writes_the_formats_asked_for_since(samples_dir, tmp_path):
    """A rerun that asks for more formats (or after a report was deleted) said "done before" and wrote nothing:
    only --fresh, which redoes the model's work, brought them."""
    import shutil

    from mediapipe_g4 import atomic
    from mediapipe_g4.batch import run_batch

    folder = tmp_path / "in"
    (folder / "week 1").mkdir(parents=True)
    shutil.copy(samples_dir / "standup.mp4", folder / "week 1" / "standup.mp4")
    options = RunOptions(cache_dir=str(tmp_path / "cache"))
    engine = ScriptedEngine(standup_engine_script())
    out = tmp_path / "out" / "week 1"  # the recording's outputs: no index is written there to sweep it

    def batch(formats):
        return run_batch(folder, tmp_path / "out", formats,
                         lambda path: process_recording(path, options, lambda model: engine), recursive=True,
                         changed=options.changed_from)

    batch(["json", "srt"])
    asked = engine.calls
    (out / "standup.srt").unlink()
    again = batch(["json", "srt", "html", "txt"])
    assert len(again.skipped) == 1 and engine.calls == asked  # no model work redone
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("standup")) == [
        "standup.html", "standup.json", "standup.srt", "standup.txt"]
    html = (out / "standup.html").read_text()
    assert "Ship the payment retry feature" in html and html.count("data:image/jpeg;base64,") >= 4  # slides too
    assert "week%201/standup.html" in (tmp_path / "out" / "index.html").read_text()
    # What a write killed by SIGKILL leaves (no process 999999) is swept where nothing is written on a rerun
    stale = out / ".standup.json.999999-dead.part"
    stale.write_text("half")
    atomic._SWEPT.clear()  # a new run, in a new process
    assert len(batch(["json", "srt"]).skipped) == 1 and not stale.exists()


def test_a_link_to_a_folder_is_said_not_to_be_followed(samples_dir, tmp_path, caplog):
    from mediapipe_g4.batch import find_recordings

    (tmp_path / "zoom").symlink_to(samples_dir, target_is_directory=True)
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert list(find_recordings(tmp_path, recursive=True)) == []
    assert "zoom is a link to a folder: not followed" in caplog.text and "loop is a link" in caplog.text


def test_a_silent_first_track_points_to_the_others(samples_dir, tmp_path, caplog):
    """OBS puts the desktop's sound on track 1 and the microphone on track 2: with the desktop silent, the run found
    no speech and said only that it used the first track."""
    from conftest import ffmpeg

    path = tmp_path / "obs.mkv"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-i", str(samples_dir / "phone_call.wav"), "-map", "0:a",
           "-map", "1:a", "-t", "20", "-c:a", "pcm_s16le", "-metadata:s:a:0", "title=Desktop",
           "-metadata:s:a:1", "title=Mic", str(path))
    options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False)
    result = process_recording(path, options, lambda model: ScriptedEngine({"transcribe": "Hello."}))
    assert result["segments"] == []
    assert "no speech was found on its first audio track; if the speech is on another, run again with " \
           "--audio-track 2" in caplog.text
    caplog.clear()
    heard = process_recording(path, dataclasses_replace(options, audio_track=2),
                              lambda model: ScriptedEngine({"transcribe": "Hello."}))
    assert heard["segments"] and "no speech was found" not in caplog.text


def test_a_recording_whose_namesake_is_gone_keeps_its_outputs(samples_dir, tmp_path):
    """a.wav and a.mp3 write a.wav.* and a.mp3.*; with a.mp3 gone, a.wav was done again as a.* and its a.wav.*
    (edited by hand, perhaps) were left behind."""
    import shutil

    from mediapipe_g4.batch import run_batch

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(samples_dir / "phone_call.wav", folder / "a.wav")
    shutil.copy(samples_dir / "interview.mp3", folder / "a.mp3")
    options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False)
    engine = ScriptedEngine({"transcribe": "Hello."})

    def batch():
        return run_batch(folder, tmp_path / "out", ["json"],
                         lambda path: process_recording(path, options, lambda model: engine),
                         changed=options.changed_from)

    batch()
    assert {p.name for p in (tmp_path / "out").glob("a.*")} == {"a.wav.json", "a.mp3.json"}
    (folder / "a.mp3").unlink()
    again = batch()
    assert len(again.skipped) == 1 and not (tmp_path / "out" / "a.json").exists()
    # one whose notes a failing model cost is done again, under the name it has
    made = json.loads((tmp_path / "out" / "a.wav.json").read_text())
    made["notes"] = {"status": "failed", "error": "the model failed: the server kept failing (503)"}
    (tmp_path / "out" / "a.wav.json").write_text(json.dumps(made))
    redone = batch()
    assert redone.skipped == [] and not (tmp_path / "out" / "a.json").exists()


def test_a_transcript_names_the_model_that_made_it(samples_dir, tmp_path):
    """`transcribe --transcribe-model X` never loads --model (the notes' model), but the report said it was made
    with the 12B."""
    options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False,
                         transcribe_model="google/gemma-4-E2B-it")
    result = process_recording(samples_dir / "phone_call.wav", options,
                               lambda model: ScriptedEngine({"transcribe": "Hello."}))
    assert result["model"]["id"] == result["model"]["transcribe_model"] == "google/gemma-4-E2B-it"


def test_a_batch_line_says_when_the_notes_were_not_produced(samples_dir, tmp_path):
    """`summarize` says "notes not produced: ..."; a batch said only "ok", and an unattended batch looked whole."""
    import shutil

    from mediapipe_g4.batch import run_batch

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(samples_dir / "phone_call.wav", folder / "call.wav")
    options = RunOptions(cache_dir=str(tmp_path / "cache"), slides=False)
    engine = ScriptedEngine({"transcribe": "Hello.", "names": "{}", "notes": "no JSON", "notes_repair": "none"})
    said = []

    def batch():
        said.clear()
        run_batch(folder, tmp_path / "out", ["json"], lambda path: process_recording(path, options, lambda m: engine),
                  on_file=lambda path, status, detail: said.append((status, detail)), changed=options.changed_from)
        return said[0]

    status, detail = batch()
    assert status == "ok" and detail.startswith("call.json (notes not produced: the model's notes could not be read")
    status, detail = batch()  # and on a rerun, which takes it as done (it said nothing)
    assert status == "done before" and detail.startswith("notes not produced: the model's notes could not be read")
    # notes skipped for want of speech are said too
    import subprocess

    from mediapipe_g4 import media

    (folder / "call.wav").unlink()
    subprocess.run([media.ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "5",
                    str(folder / "quiet.wav")], check=True)
    status, detail = batch()
    assert status == "ok" and detail == "quiet.json (notes not produced: no speech was transcribed, so there is " \
                                        "nothing to take notes of)"


def test_a_naming_request_that_fails_costs_the_names_not_the_notes(samples_dir, tmp_path, caplog):
    """A naming request a server rejected (too long, say) marked the notes failed too: they shared one try."""
    from mediapipe_g4.errors import PlanError

    script = standup_engine_script()

    def answer(request):
        if request.kind == "names":
            raise PlanError("the model server rejected a names request as too long")
        return script(request)

    result, _, _ = run(samples_dir / "standup.mp4", tmp_path / "cache", answer, fresh=True)
    assert result["notes"]["status"] == "ok" and result["notes"]["decisions"]
    assert [s["name"] for s in result["speakers"]] == ["Speaker 1", "Speaker 2", "Speaker 3"]
    assert "no speaker names: the model server rejected a names request" in caplog.text
    # a model that fails (a server down) costs both, marked so that a batch tries them again
    from mediapipe_g4.errors import ModelError

    def down(request):
        if request.kind == "names":
            raise ModelError("the model server kept failing (503)")
        return script(request)

    result, _, _ = run(samples_dir / "standup.mp4", tmp_path / "cache", down)
    assert result["notes"]["status"] == "failed" and result["notes"]["error"].startswith("the model failed")


def test_a_batch_tries_again_the_notes_a_failing_model_cost(samples_dir, tmp_path):
    """Notes lost to a model server down for a while were taken as done on every rerun: only --fresh, which redoes
    every request, brought them."""
    import shutil

    from mediapipe_g4.batch import run_batch
    from mediapipe_g4.errors import ModelError

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(samples_dir / "standup.mp4", folder / "standup.mp4")
    options = RunOptions(cache_dir=str(tmp_path / "cache"))
    script, down = standup_engine_script(), [True]

    def answer(request):
        if down[0] and request.kind == "notes":
            raise ModelError("the model server kept failing (503)")
        return script(request)

    engine = ScriptedEngine(answer)
    said = []

    def batch():
        said.clear()
        run_batch(folder, tmp_path / "out", ["json"], lambda path: process_recording(path, options, lambda m: engine),
                  on_file=lambda path, status, detail: said.append(status), changed=options.changed_from)
        return json.loads((tmp_path / "out" / "standup.json").read_text())["notes"]

    assert batch()["status"] == "failed" and said == ["ok"]
    down[0] = False
    transcribed = sum(r.kind == "transcribe" for r in engine.seen)
    assert batch()["status"] == "ok" and said == ["ok"]
    assert sum(r.kind == "transcribe" for r in engine.seen) == transcribed  # the transcript's answers were reused
    batch()
    assert said == ["done before"]
