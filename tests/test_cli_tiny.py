"""`g4media transcribe`, `summarize` and `batch` through the real transformers path on a tiny random
checkpoint. Its words are noise, so these tests check structure, times, speakers, files and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, truth

from mediapipe_g4.writers import output_stem


def g4media(*args: str, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "G4MEDIA_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mediapipe_g4", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("g4cache")


def test_transcribe_writes_every_format(samples_dir, tiny_checkpoint, cache, tmp_path):
    out = g4media("transcribe", str(samples_dir / "phone_call.wav"), "--model", str(tiny_checkpoint),
                  "-o", str(tmp_path), cache=cache)
    assert out.returncode == 0, out.stderr
    # the design's outputs (the page and Markdown too: they were left out by default), and the text transcript
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phone_call.html", "phone_call.json", "phone_call.md",
                                                          "phone_call.srt", "phone_call.txt", "phone_call.vtt"]
    assert "not produced" not in (tmp_path / "phone_call.html").read_text()  # notes were not asked for
    result = json.loads((tmp_path / "phone_call.json").read_text())
    assert set(result) >= {"source", "model", "speakers", "segments", "keyframes", "notes", "options", "timings"}
    assert abs(result["source"]["duration"] - truth("phone_call.wav")["duration"]) < 0.05
    assert len(result["source"]["sha256"]) == 64 and result["model"]["id"] == str(tiny_checkpoint)
    for seg in result["segments"]:
        assert 0 <= seg["start"] < seg["end"] <= result["source"]["duration"] + 0.05
        assert seg["speaker"] in {s["id"] for s in result["speakers"]}
    assert (tmp_path / "phone_call.vtt").read_text().startswith("WEBVTT")
    assert result["notes"]["status"] == "skipped"


def test_subtitles_alone_do_not_look_for_slides(samples_dir, tiny_checkpoint, tmp_path):
    """`transcribe --format srt` of a video: no output shows slides, so no keyframes are searched for (on a CPU
    they would take cores from the model); with X.json they are."""
    cache = tmp_path / "cache"
    for formats, looked in (("srt,txt", False), ("json", True)):
        out = g4media("transcribe", str(samples_dir / "standup.mp4"), "--model", str(tiny_checkpoint),
                      "-o", str(tmp_path / formats), "--format", formats, cache=cache)
        assert out.returncode == 0, out.stderr
        assert any(cache.glob("recordings/*/keyframes")) is looked, formats
        assert ("keyframes" in out.stdout + out.stderr) is looked  # the timings line names the stage if it ran
    result = json.loads((tmp_path / "json" / "standup.json").read_text())
    assert len(result["keyframes"]) == 4 and result["options"]["slides"] is True
    assert (tmp_path / "srt,txt" / "standup.srt").read_text().strip()


def test_summarize_video_report_is_complete(samples_dir, tiny_checkpoint, cache, tmp_path):
    out = g4media("summarize", str(samples_dir / "standup.mp4"), "--model", str(tiny_checkpoint),
                  "-o", str(tmp_path), cache=cache)
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "standup.html").read_text()
    result = json.loads((tmp_path / "standup.json").read_text())
    # a random model writes no valid notes: the report says so and has everything else
    assert result["notes"]["status"] in {"ok", "failed", "skipped"}
    if result["notes"]["status"] != "ok":
        assert "not produced" in html.lower()
    assert len(result["keyframes"]) == 4 and html.count("data:image/jpeg;base64,") >= 4
    assert "Transcript" in html and "Who spoke when" in html
    assert (tmp_path / "standup.md").exists() and (tmp_path / "standup.srt").exists()
    assert set(result["timings"]) >= {"decode", "keyframes", "diarize", "plan", "transcribe", "notes"}
    again = g4media("summarize", str(samples_dir / "standup.mp4"), "--model", str(tiny_checkpoint),
                    "-o", str(tmp_path), "--format", "json", cache=cache)
    assert again.returncode == 0, again.stderr
    rerun = json.loads((tmp_path / "standup.json").read_text())
    assert rerun["model"]["answers_generated"] == 0  # every answer, notes included, came from the work folder
    assert rerun["segments"] == result["segments"] and rerun["notes"] == result["notes"]


def test_summarize_with_the_e2b_family(samples_dir, tiny_e2b_checkpoint, cache, tmp_path):
    """`--model google/gemma-4-E4B-it` (smaller machines): the `gemma4` family's own processor, audio and vision
    towers and shared-K/V layers, through the whole command."""
    out = g4media("summarize", str(samples_dir / "standup.mp4"), "--model", str(tiny_e2b_checkpoint),
                  "-o", str(tmp_path), "--keyframe-tokens", "70", cache=cache)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "standup.json").read_text())
    assert result["model"]["id"] == str(tiny_e2b_checkpoint) and result["model"]["answers_generated"] > 10
    assert len(result["segments"]) > 5 and len(result["keyframes"]) == 4
    assert "Transcript" in (tmp_path / "standup.html").read_text()


def test_one_model_transcribes_and_another_writes_the_notes(samples_dir, tiny_checkpoint, tiny_e2b_checkpoint,
                                                             tmp_path):
    """`--transcribe-model google/gemma-4-E4B-it` beside the 12B (docs/MODEL.md): each model answers its own
    requests, in its own answer folder, and a rerun asks neither again."""
    args = ["summarize", str(samples_dir / "standup.mp4"), "--transcribe-model", str(tiny_e2b_checkpoint),
            "--model", str(tiny_checkpoint), "-o", str(tmp_path), "--format", "json"]
    cache = tmp_path / "cache"  # its own answer folders: no other test's answers in them
    out = g4media(*args, cache=cache)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "standup.json").read_text())
    assert result["model"]["transcribe_model"] == str(tiny_e2b_checkpoint)
    assert result["model"]["id"] == str(tiny_checkpoint) and len(result["segments"]) > 5
    folders = sorted((Path(result["work_dir"]) / "answers").iterdir())
    kinds = sorted(sorted({json.loads(a.read_text())["kind"] for a in folder.glob("*.json")}) for folder in folders)
    assert kinds == [["names", "notes", "notes_repair"], ["transcribe"]]
    again = g4media(*args, cache=cache)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "standup.json").read_text())["model"]["answers_generated"] == 0


@pytest.mark.slow
def test_compiled_decoding_writes_the_same_transcript(samples_dir, tiny_checkpoint, tmp_path):
    """--compile (static cache + torch.compile, inductor's C++ kernels on the CPU) against --no-compile, each
    with its own work folder so neither reuses the other's answers: about 45 s on 2 cores."""
    segments = {}
    for flag in ("--no-compile", "--compile"):
        out = g4media("transcribe", str(samples_dir / "phone_call.wav"), "--model", str(tiny_checkpoint),
                      "-o", str(tmp_path / flag), "--format", "json", flag, cache=tmp_path / f"cache{flag}")
        assert out.returncode == 0, out.stderr
        result = json.loads((tmp_path / flag / "phone_call.json").read_text())
        assert result["options"]["compile"] is (flag == "--compile")
        segments[flag] = result["segments"]
    assert len(segments["--compile"]) > 3 and segments["--compile"] == segments["--no-compile"]


def test_missing_model_is_a_clear_error(samples_dir, cache, tmp_path):
    out = g4media("transcribe", str(samples_dir / "phone_call.wav"), "--model", str(tmp_path / "no-model"),
                  "-o", str(tmp_path / "o"), cache=cache)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: ") and "does not exist" in out.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_model_too_big_for_this_machine_is_refused_before_any_work(samples_dir, tiny_checkpoint, tmp_path):
    """A folder whose weights index states twice this machine's free memory in 16 bits: one line at once, before
    the recording is decoded, naming the 16-bit need (the nearer miss; float32 would need twice that)."""
    import psutil

    big = tmp_path / "big-model"
    shutil.copytree(tiny_checkpoint, big)
    stored = 2 * (psutil.virtual_memory().available + psutil.swap_memory().free)  # float32: 4x what this says
    (big / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": stored}, "weight_map": {}}))
    cache = tmp_path / "cache"
    out = g4media("transcribe", str(samples_dir / "phone_call.wav"), "--model", str(big), "-o", str(tmp_path / "o"),
                  cache=cache)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("Error: ") and "GB for its weights (bfloat16)" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not list(cache.glob("recordings/*/audio*"))  # nothing decoded


def test_killed_run_resumes_with_the_same_result(samples_dir, tiny_checkpoint, tmp_path):
    cache = tmp_path / "cache"
    args = ["transcribe", str(samples_dir / "standup.mp4"), "--model", str(tiny_checkpoint), "--batch-size", "1",
            "--format", "json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "G4MEDIA_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mediapipe_g4", *args, "-o", str(tmp_path / "a")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(cache.glob("recordings/*/answers/*/*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered = len(list(cache.glob("recordings/*/answers/*/*.json")))
    assert answered >= 1, "the run was killed before any answer was kept"
    assert not (tmp_path / "a" / "standup.json").exists()  # no half output
    (work,) = cache.glob("recordings/*")
    assert (work / "audio.f32").is_file()  # kept for the resumed run
    resumed = g4media(*args, "-o", str(tmp_path / "a"), cache=cache)
    assert resumed.returncode == 0, resumed.stderr
    assert not (work / "audio.f32").exists()  # the outputs are made: the decoded audio goes, the rest stays
    assert list(work.glob("turns-*.json")) and list(work.glob("keyframes*"))
    first = json.loads((tmp_path / "a" / "standup.json").read_text())
    total = len(list(cache.glob("recordings/*/answers/*/*.json")))
    assert first["model"]["answers_generated"] == total - answered  # only the missing ones were generated
    clean = g4media(*args, "-o", str(tmp_path / "b"), "--fresh", cache=tmp_path / "other-cache")
    assert clean.returncode == 0, clean.stderr
    second = json.loads((tmp_path / "b" / "standup.json").read_text())
    assert first["segments"] == second["segments"] and first["speakers"] == second["speakers"]


def test_batch_goes_on_past_bad_files_and_skips_done_ones(samples_dir, media_corpus, tiny_checkpoint, cache, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(samples_dir / "phone_call.wav", folder / "call <1> & co.wav")
    shutil.copy(samples_dir / "interview.mp3", folder / "sub" / "interview")  # no extension: found by content
    shutil.copy(media_corpus["text_mp4"], folder / "broken.mp4")
    (folder / "readme.txt").write_text("not a recording")
    out_dir = tmp_path / "out"
    args = ["batch", str(folder), "-r", "--transcribe-only", "--model", str(tiny_checkpoint), "-o", str(out_dir)]
    first = g4media(*args, cache=cache)
    assert first.returncode == 1, first.stdout + first.stderr  # one failure
    assert "broken.mp4: failed" in first.stderr and "Traceback" not in first.stderr
    assert (out_dir / f"{output_stem('call <1> & co.wav')}.json").exists() and (out_dir / "sub" / "interview.json").exists()
    index = (out_dir / "index.html").read_text()
    assert "broken.mp4" in index and "not a readable media file" in index and "readme" not in index
    assert "call &lt;1&gt; &amp; co.wav" in index
    assert ">sub/interview</a>" in index  # named by its path in the folder: same names in two folders stay apart
    again = g4media(*args, cache=cache)
    assert again.returncode == 1 and "done before" in again.stdout
    assert "2 done (2 from before), 1 failed" in again.stdout


def test_bad_inputs_in_transcribe(media_corpus, tiny_checkpoint, cache, tmp_path):
    for key, words in [("empty", "empty"), ("random", "not a readable media file"), ("silent_video", "no audio track")]:
        out = g4media("transcribe", str(media_corpus[key]), "--model", str(tiny_checkpoint), "-o", str(tmp_path),
                      cache=cache)
        assert out.returncode == 1 and out.stderr.startswith("Error: ") and words in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []
    out = g4media("transcribe", str(media_corpus["unicode"]), "--model", str(tiny_checkpoint), "-o", str(tmp_path),
                  cache=cache)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / f"{output_stem(media_corpus['unicode'].name)}.json").exists()
    out = g4media("transcribe", str(media_corpus["broken_video"]), "--model", str(tiny_checkpoint), "-o",
                  str(tmp_path), "--format", "json", cache=cache)
    assert out.returncode == 0 and "going on without slides" in out.stderr, out.stderr
    result = json.loads((tmp_path / f"{output_stem(media_corpus['broken_video'].name)}.json").read_text())
    assert result["segments"] and result["keyframes"] == []  # the sound still made a transcript


def test_several_files_are_prepared_ahead_beside_a_gpu_model(samples_dir, tiny_checkpoint, tmp_path, monkeypatch):
    """`transcribe a b` with the model in process on a GPU (here: told so) prepares b in a thread while the model
    works on a, and writes both as without it."""
    import threading

    from click.testing import CliRunner

    from mediapipe_g4 import pipeline
    from mediapipe_g4.cli import main

    threads = []
    prepare = pipeline.prepare_recording

    def spy(path, *args, **kwargs):
        threads.append((Path(path).name, threading.current_thread().name))
        return prepare(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "prepares_ahead", lambda options: True)
    monkeypatch.setattr(pipeline, "prepare_recording", spy)
    monkeypatch.setenv("G4MEDIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = [str(samples_dir / "phone_call.wav"), str(samples_dir / "interview.mp3")]
    res = CliRunner().invoke(main, ["transcribe", *files, "--model", str(tiny_checkpoint), "--device", "cpu",
                                    "-o", str(tmp_path / "out"), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert threads == [("phone_call.wav", threading.current_thread().name), ("interview.mp3", "g4-prepare")]
    for name in ("phone_call", "interview"):
        assert json.loads((tmp_path / "out" / f"{name}.json").read_text())["segments"]
