"""The command line as a user meets it: probe, doctor, and bad input as one clear line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT

from mediapipe_g4.cli import main


def g4media(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mediapipe_g4", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def assert_one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_bare_command_shows_its_help():
    """`g4media` alone printed its whole help squeezed into one `Error:` line, cut off, with status 1."""
    out = g4media()
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("Usage: g4media") and "\nCommands:\n" in out.stdout and "summarize" in out.stdout


def test_probe_json_on_video(samples_dir):
    out = g4media("probe", str(samples_dir / "standup.mp4"), "--json")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert abs(facts["duration"] - 64.0) < 0.1
    assert [round(k["time"]) for k in facts["keyframes"]] == [0, 14, 31, 50]
    assert facts["audio"][0]["codec"] == "aac" and facts["video"][0]["rotation"] == 0


def test_probe_text_on_audio(samples_dir):
    res = CliRunner().invoke(main, ["probe", str(samples_dir / "interview.mp3")])
    assert res.exit_code == 0, res.output
    assert "mp3" in res.output and "48000 Hz" in res.output


@pytest.mark.parametrize("key", ["empty", "text_mp4", "random"])
def test_probe_bad_input(media_corpus, key):
    line = assert_one_error_line(g4media("probe", str(media_corpus[key])))
    assert str(media_corpus[key].name) in line


def test_probe_missing_and_folder(tmp_path):
    assert "no such file" in assert_one_error_line(g4media("probe", str(tmp_path / "missing.mp4")))
    assert "is a folder" in assert_one_error_line(g4media("probe", str(tmp_path)))
    assert "reads local files only" in assert_one_error_line(g4media("transcribe", "https://example.com/a.mp3"))
    assert "an empty file name" in assert_one_error_line(g4media("diarize", ""))
    fifo = tmp_path / "pipe.wav"  # what `g4media probe /dev/stdin` or `<(curl ...)` gives: a file read once only
    os.mkfifo(fifo)
    assert "save it to a file first" in assert_one_error_line(g4media("probe", str(fifo)))


def test_probe_odd_names_and_video_without_audio(media_corpus):
    out = g4media("probe", str(media_corpus["unicode"]), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["path"].endswith("会议.ogg")
    out = g4media("probe", str(media_corpus["silent_video"]))
    assert out.returncode == 0 and "no audio track" in out.stdout


def test_names_ffmpeg_would_read_as_an_option_or_a_protocol(samples_dir, tmp_path):
    for name in ("-notes.wav", "rtp:call.wav"):
        (tmp_path / name).write_bytes((samples_dir / "phone_call.wav").read_bytes())
        out = subprocess.run([sys.executable, "-m", "mediapipe_g4", "diarize", "--cache-dir", str(tmp_path), "--",
                              name], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0 and out.stdout.startswith(f"{name}: 38.1 s, 2 speakers"), out.stderr


def test_output_into_a_closed_pipe_stops_quietly(samples_dir):
    """`g4media probe X | head -0`: the reader is gone before anything is written; no error line, status 141."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mediapipe_g4", "probe", str(samples_dir / "phone_call.wav")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == "", stderr


def test_debug_shows_traceback_anywhere_on_the_line(media_corpus):
    out = g4media("probe", str(media_corpus["empty"]), "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "MediaError" in out.stderr


def test_doctor_reports_every_check():
    out = g4media("doctor", "--json")
    report = json.loads(out.stdout)
    names = [c["name"] for c in report["checks"]]
    assert names == ["ffmpeg", "torch", "compile", "memory", "cache", "model", "packages"]
    ffmpeg = report["checks"][0]
    assert ffmpeg["status"] == "ok" and "ffmpeg version" in ffmpeg["detail"]
    model = report["checks"][5]
    assert model["status"] == "ok" or "hf download" in model["detail"]
    if model["status"] != "ok":  # not downloaded: the default model's known shape still says whether it would fit
        assert "once downloaded it runs on" in model["detail"] or "it would not fit here: " in model["detail"]


def test_doctor_with_a_model_folder_under_home(tmp_path, tiny_checkpoint):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "models" / "tiny")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "mediapipe_g4", "doctor", "--model", "~/models/tiny", "--json"],
                         capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    model = [c for c in json.loads(out.stdout)["checks"] if c["name"] == "model"][0]
    assert model["status"] == "ok" and "local folder" in model["detail"], model


def test_doctor_with_local_model_folder(tmp_path, tiny_checkpoint):
    res = CliRunner().invoke(main, ["doctor", "--model", str(tiny_checkpoint), "--json"])
    model = json.loads(res.output)["checks"][5]
    assert model["status"] == "ok" and "local folder; runs on cpu in float32" in model["detail"], model
    (tmp_path / "config.json").write_text("{}")
    res = CliRunner().invoke(main, ["doctor", "--model", str(tmp_path), "--json"])
    model = json.loads(res.output)["checks"][5]
    assert model["status"] == "fail" and "cannot load the config of the folder" in model["detail"], model
    assert "hf download" not in model["detail"] and res.exit_code == 1  # a local folder is not fixed by downloading
    for name in ("config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    res = CliRunner().invoke(main, ["doctor", "--model", str(tmp_path), "--json"])  # all but the weights
    model = json.loads(res.output)["checks"][5]
    assert model["status"] == "fail" and "it holds no weights" in model["detail"] and res.exit_code == 1, model
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")  # a download that stopped part-way
    model = json.loads(CliRunner().invoke(main, ["doctor", "--model", str(tmp_path), "--json"]).output)["checks"][5]
    assert model["status"] == "fail" and "1 of its 2 weight files are missing" in model["detail"], model


def test_doctor_fails_what_a_run_would_fail_on(tmp_path):
    """A cache that is a file, and a G4MEDIA_FFMPEG that is not FFmpeg, were `[ok]`; the run then failed."""
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho broken\nexit 3\n")
    fake.chmod(0o755)
    (tmp_path / "afile").write_text("x")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "G4MEDIA_FFMPEG": str(fake), "G4MEDIA_CACHE": str(tmp_path / "afile")}
    out = subprocess.run([sys.executable, "-m", "mediapipe_g4", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120, env=env, stdin=subprocess.DEVNULL)
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert out.returncode == 1
    assert checks["ffmpeg"]["status"] == "fail" and "is not a working FFmpeg" in checks["ffmpeg"]["detail"]
    assert checks["cache"]["status"] == "fail" and "is a file, not a folder" in checks["cache"]["detail"]
    fake.chmod(0o644)  # not executable: one line from any command, not `unexpected PermissionError`
    line = assert_one_error_line(subprocess.run(
        [sys.executable, "-m", "mediapipe_g4", "probe", str(ROOT / "samples" / "standup.mp4")], capture_output=True,
        text=True, timeout=120, env=env, stdin=subprocess.DEVNULL))
    assert "is not executable" in line


def test_default_model_missing_and_hub_unreachable_fails_at_once(samples_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "G4MEDIA_CACHE": str(tmp_path / "cache")}
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run([sys.executable, "-m", "mediapipe_g4", "summarize", str(samples_dir / "standup.mp4"),
                          "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env,
                         stdin=subprocess.DEVNULL)
    line = assert_one_error_line(out)
    assert "google/gemma-4-12B-it is not downloaded" in line and "hf download google/gemma-4-12B-it" in line
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_missing_or_bad_file_is_reported_before_the_model(tmp_path):
    """A mistyped path says so, not that the (default, not downloaded) model is missing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "G4MEDIA_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "mediapipe_g4", "transcribe", str(tmp_path / "mistyped.wav"),
                          str(tmp_path)], capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
                         check=False)
    line = assert_one_error_line(out)
    assert "mistyped.wav: no such file" in line and "gemma" not in line
    (tmp_path / "notes.mp4").write_text("not a recording")
    out = subprocess.run([sys.executable, "-m", "mediapipe_g4", "summarize", str(tmp_path / "notes.mp4")],
                         capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL, check=False)
    line = assert_one_error_line(out)
    assert "notes.mp4" in line and "not a readable media file" in line and "gemma" not in line


def test_progress_without_a_terminal_is_a_line_now_and_then_for_long_steps(monkeypatch, capsys):
    """Output to a file (a batch job's log): steps shorter than the interval say nothing; a long one says where it
    is every interval and when it ends, whatever the log level."""
    from mediapipe_g4 import progress

    clock = {"now": 0.0}
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    with progress.progress_hook(interval=10.0) as hook:
        for t, step, done in ((0, "decode", 0), (3, "decode", 60), (4, "transcribe", 0), (9, "transcribe", 5),
                              (15, "transcribe", 9), (20, "transcribe", 12), (26, "transcribe", 18),
                              (31, "transcribe", 20), (40, "transcribe", 0), (42, "transcribe", 8),
                              (50, "speech", 0), (62, "speech", 30)):
            clock["now"] = float(t)  # (40, 42): the next recording of a batch, a short step again
            hook(step, done, 20 if step == "transcribe" else 60)
    assert capsys.readouterr().err.splitlines() == ["g4media: transcribe 9/20", "g4media: transcribe 18/20",
                                                    "g4media: transcribe 20/20", "g4media: speech 30/60 s"]


@pytest.mark.parametrize("content, says", [
    ('{"source": {}, "segments": [', "is not valid JSON: Expecting value at line 1, column 29"),
    ('{"speakers": []}', "is not a g4media result"),
    ('{"source": {}, "segments": ' + "[" * 100_000 + "]" * 100_000 + "}", "is nested too deeply to be a result"),
    ('{"source": {}, "segments": [], "x": ' + "[" * 600 + "]" * 600 + "}", "is nested too deeply to be a result"),
    ('{"source": {}, "segments": [{"start": "0:05", "end": 7, "text": "hi"}]}', 'segments[0].start is "0:05"'),
    ('{"source": {}, "segments": [{"start": 9, "end": 7, "text": "hi"}]}', "segments[0] ends (7) before it starts (9)"),
    ('{"source": {}, "segments": [], "speakers": [{"name": "Ann"}]}', 'speakers[0] is not an object with "id"'),
    ('{"source": {}, "segments": [], "notes": {"decisions": "none"}}', "notes.decisions is not a list"),
    ('{"source": {}, "segments": [], "options": "x"}', "options is not an object"),
    ('{"source": {}, "segments": [{"start": -5, "end": 7, "text": "hi"}]}', "segments[0].start is -5"),
    ('{"source": {}, "segments": [], "notes": {"chapters": [{"start": 1e308, "title": "x"}]}}',
     "notes.chapters[0].start is 1e+308, not a time"),
    ('{"source": {}, "segments": [], "notes": {"decisions": [{"text": "x", "time": "soon"}]}}',
     'notes.decisions[0].time is "soon"'),
    ('{"source": {}, "segments": [], "speakers": [{"id": "S1", "talk_time": 1e308}]}',
     "speakers[0].talk_time is 1e+308, not a time"),
    ('{"source": {}, "segments": [], "speakers": [{"id": "S1", "talk_time": -3}]}', "speakers[0].talk_time is -3"),
    ('{"source": {}, "segments": [], "speakers": [{"id": "S1", "evidence": 5}]}', "speakers[0].evidence is not a list"),
    # The reports showed these as Python's ['a', 'b'] and exit status 0.
    ('{"source": {}, "segments": [], "notes": {"summary": ["a", "b"]}}', "notes.summary is not a string"),
    ('{"source": {}, "segments": [], "notes": {"summary": {"a": 1}}}', "notes.summary is not a string"),
    ('{"source": {}, "segments": [], "notes": {"chapters": [{"start": 1, "title": ["a"]}]}}',
     "notes.chapters[0].title is not a string"),
    ('{"source": {}, "segments": [], "notes": {"action_items": [{"text": "x", "due": ["Friday"]}]}}',
     "notes.action_items[0].due is not a string"),
    ('{"source": {}, "segments": [], "notes": {"action_items": [{"text": "x", "owner": ["Bob"]}]}}',
     "notes.action_items[0].owner is not a string"),
    ('{"source": {}, "segments": [], "notes": {"questions": [{"text": ["why"]}]}}',
     "notes.questions[0].text is not a string"),
    ('{"source": {"warning": ["cut off"]}, "segments": []}', "source.warning is not a string"),
    ('{"source": {"name": ["a.wav"]}, "segments": []}', "source.name is not a string"),
])
def test_render_names_what_is_wrong_with_a_result_and_writes_nothing(tmp_path, content, says):
    good = tmp_path / "good.json"
    good.write_text('{"source": {"name": "a.wav"}, "segments": [{"start": 0, "end": 2, "text": "hi", "speaker": "S1"}]}')
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    line = assert_one_error_line(g4media("render", str(good), str(bad)))
    assert "bad.json" in line and says in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "good.json"]  # every input checked first


def test_render_of_a_piped_result_names_the_outputs_after_the_recording(tmp_path):
    # `g4media render <(...)`: the outputs were "63.html" in /dev/fd (which cannot be written to).
    good = tmp_path / "edited.json"
    good.write_text('{"source": {"name": "standup.mp4"}, "segments": [{"start": 0, "end": 2, "text": "hi", '
                    '"speaker": "S1"}]}')
    here = tmp_path / "here"
    here.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(["bash", "-c", f'"{sys.executable}" -m mediapipe_g4 render --format md <(cat "{good}")'],
                         cwd=here, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert [p.name for p in here.iterdir()] == ["standup.md"] and "hi" in (here / "standup.md").read_text()
    # `render /dev/stdin < X.json`: /dev/stdin is then a link to the regular file; its outputs went into /dev.
    (here / "standup.md").unlink()
    run = subprocess.run(["bash", "-c", f'"{sys.executable}" -m mediapipe_g4 render --format md /dev/stdin < "{good}"'],
                         cwd=here, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert [p.name for p in here.iterdir()] == ["standup.md"] and not os.path.exists("/dev/stdin.md")


def test_diarize_keeps_its_turns_in_the_cache_dir_given_and_not_the_decoded_audio(samples_dir, tmp_path):
    out = g4media("diarize", str(samples_dir / "phone_call.wav"), "--json", "--cache-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["turns"]
    kept = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    # The turns, for a rerun or summarize to reuse; not the decoded audio (64 KB a second of recording).
    assert len(kept) == 1 and kept[0].startswith("turns-") and kept[0].endswith(".json"), kept
    turns = next(tmp_path.rglob("turns-*.json"))
    made = turns.stat().st_mtime_ns
    assert g4media("diarize", str(samples_dir / "phone_call.wav"), "--cache-dir", str(tmp_path)).returncode == 0
    assert turns.stat().st_mtime_ns == made  # reused
    assert g4media("diarize", str(samples_dir / "phone_call.wav"), "--cache-dir", str(tmp_path),
                   "--fresh").returncode == 0
    assert turns.stat().st_mtime_ns > made  # found again


def test_batch_of_a_folder_without_recordings_is_an_error(tmp_path, tiny_checkpoint):
    (tmp_path / "notes.txt").write_text("not a recording")
    line = assert_one_error_line(g4media("batch", str(tmp_path), "--model", str(tiny_checkpoint), "-o",
                                         str(tmp_path / "out")))
    assert "no recordings found in" in line and "-r looks in its sub-folders too" in line
    assert not (tmp_path / "out").exists()  # no empty index either


def test_batch_into_a_folder_that_cannot_be_is_refused_before_any_work(samples_dir, tmp_path):
    """-o under a file: one line at once, as summarize says it (it was a failure per recording, each calling its
    X.json "there but does not read as JSON", then the index's)."""
    (tmp_path / "recs").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "recs" / name).write_bytes((samples_dir / "phone_call.wav").read_bytes())
    (tmp_path / "taken").write_text("a file")
    line = assert_one_error_line(g4media("batch", str(tmp_path / "recs"), "--model", str(tmp_path / "no model"),
                                         "-o", str(tmp_path / "taken" / "out"), "--cache-dir", str(tmp_path / "c")))
    assert f"Cannot write {tmp_path / 'taken' / 'out'}: Not a directory" in line, line
    assert not (tmp_path / "c").exists()


def test_diarize_refuses_to_write_its_rttm_over_the_recording(samples_dir, tmp_path):
    call = tmp_path / "call.wav"
    call.write_bytes((samples_dir / "phone_call.wav").read_bytes())
    line = assert_one_error_line(g4media("diarize", str(call), "--rttm", str(call), "--cache-dir", str(tmp_path)))
    assert "it is the recording itself" in line
    assert call.read_bytes() == (samples_dir / "phone_call.wav").read_bytes()


def test_a_file_name_with_a_newline_keeps_the_error_on_one_line(tmp_path):
    (tmp_path / "a\nb.wav").write_text("not media")
    line = assert_one_error_line(g4media("probe", str(tmp_path / "a\nb.wav")))
    assert "a\\x0ab.wav" in line


def test_diarize_rttm_dash_prints_the_turns(samples_dir, tmp_path):
    """`--rttm -` printed nothing and wrote a file named `-`; it prints the RTTM, as `-` means to Unix tools."""
    call = samples_dir / "phone_call.wav"
    out = g4media("diarize", str(call), "--rttm", "-", "--cache-dir", str(tmp_path / "cache"), "--speakers", "2")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines and all(ln.startswith("SPEAKER phone_call 1 ") for ln in lines), out
    assert not (ROOT / "-").exists()
    assert "--json both print" in assert_one_error_line(g4media("diarize", str(call), "--rttm", "-", "--json"))


def test_diarize_says_why_its_rttm_cannot_be_written_before_the_work(samples_dir, tmp_path):
    """--rttm under a file, not a folder: the reason (it said "File exists"), at once (no turns found first)."""
    call = tmp_path / "call.wav"
    call.write_bytes((samples_dir / "phone_call.wav").read_bytes())
    line = assert_one_error_line(g4media("diarize", str(call), "--rttm", str(call / "turns.rttm"),
                                         "--cache-dir", str(tmp_path / "cache")))
    assert f"Cannot write {call / 'turns.rttm'}: Not a directory: {call}" in line, line
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_a_seed_no_engine_takes_is_refused_before_any_work(samples_dir, tmp_path, seed):
    """A seed past 64 bits stopped the run at its notes, after the whole transcription, with `unexpected
    ValueError: Overflow when unpacking long long`; -1 is a random seed to llama.cpp, not the same notes again."""
    out = CliRunner().invoke(main, ["summarize", str(samples_dir / "phone_call.wav"), "--model", str(tmp_path),
                                    "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out"),
                                    f"--seed={seed}"])
    assert out.exit_code == 1 and "Invalid value for '--seed'" in out.output, out.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, says", [
    (["diarize", "x.wav", "--speakers", "0"], "Invalid value for '--speakers': 0 is not in the range x>=1; see "
                                              "`g4media diarize --help`"),
    (["diarize"], "Missing argument 'FILE'; see `g4media diarize --help`"),
    (["transcribe", "x.wav", "--bogus"], "No such option '--bogus'; see `g4media transcribe --help`"),
    (["frobnicate"], "No such command 'frobnicate'; see `g4media --help`"),
    (["--bogus"], "No such option '--bogus'"),
])
def test_a_bad_option_or_argument_is_one_error_line(args, says):
    """Like any other bad input: one `Error:` line and status 1 (click's own is a usage block, a hint and 2)."""
    assert says in assert_one_error_line(g4media(*args))


def test_outputs_that_cannot_be_written_are_refused_before_any_work(samples_dir, tmp_path):
    """A recording that one of its own outputs would overwrite, or an output folder that cannot be made: one
    line at once (the default model is not even looked for), nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    rec = out / "talk.txt"  # a recording is found by its content, whatever its name
    rec.write_bytes((samples_dir / "phone_call.wav").read_bytes())
    line = assert_one_error_line(g4media("transcribe", str(rec), "-o", str(out), "--format", "json,txt"))
    assert "Refusing to write" in line and "talk.txt: it is one of the files given" in line
    assert sorted(p.name for p in out.iterdir()) == ["talk.txt"]
    # an X.json given as the recording is said to be one, with what to run instead (it was "one of the recordings")
    made = out / "standup.json"
    made.write_text(json.dumps({"source": {"name": "standup.mp4"}, "segments": []}))
    line = assert_one_error_line(g4media("summarize", str(made), "-o", str(out)))
    assert "standup.json is what g4media wrote for a recording" in line and "g4media render" in line
    made.unlink()
    (out / "notes.md").write_text("# notes\n")  # not media: said so, not that its output would overwrite it
    line = assert_one_error_line(g4media("transcribe", str(out / "notes.md"), "-o", str(out)))
    assert "is not a readable media file" in line
    (tmp_path / "a file").write_text("x")
    line = assert_one_error_line(g4media("transcribe", str(samples_dir / "phone_call.wav"), "-o",
                                         str(tmp_path / "a file" / "sub")))
    assert "Cannot write" in line and "a file" in line
    (out / "phone_call.json").mkdir()  # a folder where an output goes: found at once, not after the whole run
    line = assert_one_error_line(g4media("transcribe", str(samples_dir / "phone_call.wav"), "-o", str(out)))
    assert "phone_call.json: a folder of that name is there" in line
    (out / "phone_call.json").rmdir()
    (out / "phone_call.srt").symlink_to(tmp_path / "gone" / "x.srt")  # a link out of the folder: at once too
    line = assert_one_error_line(g4media("transcribe", str(samples_dir / "phone_call.wav"), "-o", str(out)))
    assert "phone_call.srt: it is a link to" in line and "outside" in line


@pytest.mark.parametrize("args, says", [
    (["diarize", "{wav}", "--speakers", "2", "--min-speakers", "3"], "--speakers 2 is outside --min-speakers 3"),
    (["diarize", "{wav}", "--speakers", "9", "--max-speakers", "8"], "--speakers 9 is outside"),
    (["eval", "{wav}", "{wav}", "--collar", "nan"], "Invalid value for '--collar': not a number"),
    (["transcribe", "{wav}", "--max-clip", "nan"], "Invalid value for '--max-clip': not a number"),
])
def test_options_that_contradict_or_are_not_numbers_are_refused(samples_dir, tmp_path, args, says):
    """`--speakers 2 --min-speakers 3` went on with 2 (the range was dropped without a word); `nan` passes click's
    range checks, and a DER at collar nan is no figure."""
    args = [a.format(wav=samples_dir / "phone_call.wav") for a in args]
    out = CliRunner().invoke(main, [*args, "--cache-dir", str(tmp_path)] if args[0] != "eval" else args)
    assert out.exit_code == 1 and says in out.output and out.output.count("\n") == 1, out.output
    assert list(tmp_path.iterdir()) == []  # refused before any work
    ok = CliRunner().invoke(main, ["diarize", str(samples_dir / "phone_call.wav"), "--speakers", "10", "--json",
                                   "--cache-dir", str(tmp_path)])  # a count above the default --max-speakers 8
    assert ok.exit_code == 0 and len(json.loads(ok.stdout)["speakers"]) <= 10, ok.output


def test_a_device_model_or_cache_folder_that_cannot_be_is_one_clear_line(samples_dir, tmp_path):
    import torch

    from mediapipe_g4.errors import G4Error, ModelError
    from mediapipe_g4.memory import check_device
    from mediapipe_g4.transformers_engine import resolve_model
    from mediapipe_g4.workdir import media_work_dir

    assert check_device(" CPU ") == "cpu"
    assert check_device("auto") in ("cuda", "mps", "cpu")  # the best there is, as without --device
    for bad in ("tpu", "cpu:1", "cuda:x"):
        with pytest.raises(ModelError, match="is not a device; use cuda, cuda:N, mps or cpu"):
            check_device(bad)
    if not torch.cuda.is_available():
        line = assert_one_error_line(g4media("transcribe", str(samples_dir / "phone_call.wav"), "--device", "cuda",
                                             "-o", str(tmp_path / "out")))
        assert "this machine has no CUDA GPU that torch can use" in line
    for bad in ("not a model", "bad id!", "-x/y"):
        with pytest.raises(ModelError, match="is neither a model folder here nor a Hugging Face Hub id"):
            resolve_model(bad)
    assert resolve_model("google/gemma-4-E4B-it") == ("google/gemma-4-E4B-it", False)
    (tmp_path / "a file").write_text("x")
    with pytest.raises(G4Error, match="Cannot make the work folder .*pass --cache-dir"):
        media_work_dir("0" * 64, tmp_path / "a file")


def test_progress_without_a_terminal_says_a_long_single_request_is_still_going(monkeypatch, capsys):
    import time

    from mediapipe_g4 import progress

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    with progress.progress_hook(interval=0.2) as hook:
        hook("notes", 0, 1)  # one request that takes a while
        time.sleep(0.75)
        hook("notes", 1, 1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "g4media: notes 1/1" and len(lines) >= 3
    assert all(re.fullmatch(r"g4media: notes 0/1, \d+ s in", line) for line in lines[:-1]), lines


def test_formats_are_the_writers_own_names():
    """`all` and other spellings become the writers' names once, so every later step (which outputs show slides,
    which files a batch finds done) reads one list: `--format all` made batch reruns fail on get_writer("all")."""
    from mediapipe_g4 import cli
    from mediapipe_g4.writers import WRITERS

    assert cli._formats("all") == cli._formats("json,ALL") == list(WRITERS)
    assert cli._formats("HTML, markdown,html") == ["html", "md"]


def test_library_progress_bars_stay_out_of_a_log_file_even_with_v(tmp_path):
    # `g4media -v ... 2> run.log` filled the log with transformers' weight-loading bar, redrawn with carriage returns.
    code = ("import logging, os; from mediapipe_g4 import cli; cli._configure_logging(logging.{level}); "
            "print(os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'), os.environ.get('TRANSFORMERS_VERBOSITY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    with open(tmp_path / "run.log", "w") as log_file:
        verbose = subprocess.run([sys.executable, "-c", code.format(level="INFO")], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=log_file, text=True, timeout=60)
        quiet = subprocess.run([sys.executable, "-c", code.format(level="WARNING")], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=log_file, text=True, timeout=60)
    assert verbose.stdout.split() == ["1", "None"]  # -v: the libraries' messages, not their bars
    assert quiet.stdout.split() == ["1", "error"]


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal")
def test_logs_on_a_terminal_stay_off_stdout():
    # With stderr on a terminal, -v logs went to stdout (rich's default console), into `diarize --json > x.json`.
    import pty

    master, slave = pty.openpty()
    code = ("import logging; from mediapipe_g4 import cli; cli._configure_logging(logging.INFO); "
            "logging.getLogger('mediapipe_g4').info('decoded call.wav')")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=slave,
                              text=True, timeout=60)
        import select

        terminal = os.read(master, 4096).decode() if select.select([master], [], [], 5)[0] else ""
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == 0 and done.stdout == ""
    assert "decoded call.wav" in terminal


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal")
def test_a_log_line_during_progress_is_printed_above_the_bars():
    # With -v on a terminal, a log line was written by a second console into the middle of the progress bars
    # ("decode ━━━╺━━ 16/42 0:00:01INFO     decoded ..."), and the bars were drawn again below it, many times.
    import pty
    import select

    code = ("import logging, time; from mediapipe_g4 import cli; from mediapipe_g4.progress import progress_hook\n"
            "cli._configure_logging(logging.INFO)\n"
            "with progress_hook() as hook:\n"
            "    hook('decode', 16, 42); time.sleep(0.3)\n"
            "    logging.getLogger('mediapipe_g4').info('decoded call.wav'); time.sleep(0.3)\n"
            "    hook('decode', 42, 42); time.sleep(0.3)\n")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=slave, stderr=slave,
                                env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
        chunks = []
        while proc.poll() is None or select.select([master], [], [], 0.2)[0]:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunks.append(os.read(master, 65536))
                except OSError:
                    break
        proc.wait(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    lines = [line for line in re.split(r"[\r\n]", screen) if "decoded call.wav" in line]
    assert lines and all("━" not in line and "/42" not in line for line in lines), lines


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_under_the_work_folder_is_one_clear_error(samples_dir, tmp_path):
    # It was "Error: unexpected OSError: [Errno 28] No space left on device (run again with --debug ...)".
    from mediapipe_g4 import media
    from mediapipe_g4.workdir import file_sha256

    recording = samples_dir / "phone_call.wav"
    work = tmp_path / "cache" / "recordings" / file_sha256(recording)[:24]
    work.mkdir(parents=True)
    for name in (media.AUDIO_FILE, media.side_file(1), media.side_file(2)):  # this process's decoding goes there
        (work / f".{name}.{os.getpid()}.part").symlink_to("/dev/full")
    result = CliRunner().invoke(main, ["diarize", str(recording), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: Cannot write to the work folder under {tmp_path / 'cache' / 'recordings'}"
                                    ": No space left on device. Free some space there, or pass --cache-dir")


@pytest.mark.skipif(not os.path.exists("/sys/kernel/notes"), reason="needs a file nobody may write, root included")
def test_a_work_folder_not_ours_to_write_says_so(samples_dir, tmp_path):
    # It was "Error: unexpected PermissionError: ..." (a work folder made by a run with sudo, or another user's).
    from mediapipe_g4 import media
    from mediapipe_g4.workdir import file_sha256

    recording = samples_dir / "phone_call.wav"
    work = tmp_path / "cache" / "recordings" / file_sha256(recording)[:24]
    work.mkdir(parents=True)
    for name in (media.AUDIO_FILE, media.side_file(1), media.side_file(2)):
        (work / f".{name}.{os.getpid()}.part").symlink_to("/sys/kernel/notes")  # EACCES, even for root
    result = CliRunner().invoke(main, ["diarize", str(recording), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "Permission denied. It is not yours to write (made by another user, or by a run with sudo?)" in result.output


def test_a_relative_cache_dir_is_made_absolute(monkeypatch, tmp_path):
    from mediapipe_g4.workdir import cache_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("G4MEDIA_CACHE", "env-cache")
    assert cache_root("cache") == tmp_path / "cache" and cache_root() == tmp_path / "env-cache"


def test_a_long_step_without_an_estimate_shows_how_long_it_has_run():
    # "notes 0/1 -:--:--" for the many minutes of one notes request on a CPU: nothing said it was still going.
    from rich.progress import Progress

    from mediapipe_g4.progress import time_column

    clock = {"now": 0.0}
    column = time_column()
    bar = Progress(column, get_time=lambda: clock["now"], disable=True)
    notes = bar.add_task("notes", total=1)
    clock["now"] = 83.0
    assert column.render(bar.tasks[0]).plain == "0:01:23 so far"
    clips = bar.add_task("transcribe", total=60)
    for n in range(1, 11):
        clock["now"] += 2.0
        bar.update(clips, completed=n)
    assert column.render(bar.tasks[1]).plain == "0:01:40 left"  # 50 clips at 2 s
    bar.update(notes, completed=1)
    assert column.render(bar.tasks[0]).plain == "0:01:43"



@pytest.mark.parametrize("command", ["summarize", "transcribe", "batch"])
def test_help_says_that_a_rerun_resumes(command):
    shown = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
    assert "the same command again resumes" in shown and "so a rerun resumes" in shown  # and --cache-dir says why


@pytest.mark.parametrize("command", ["summarize", "transcribe", "batch"])
def test_help_gives_the_context_budget_with_a_server(command):
    from mediapipe_g4.openai_engine import SERVER_CONTEXT_TOKENS

    shown = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
    assert f"with a model server (--server), {SERVER_CONTEXT_TOKENS}" in shown


def test_a_batch_of_no_folder_or_no_recordings_says_so_before_the_model(tmp_path):
    """A mistyped or empty folder was answered with "google/gemma-4-12B-it is not downloaded ... download it": the
    model was looked for first."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a recording")
    line = assert_one_error_line(g4media("batch", str(tmp_path / "nofolder")))
    assert "nofolder is not a folder" in line
    line = assert_one_error_line(g4media("batch", str(tmp_path / "empty")))
    assert "no recordings found in" in line and "download" not in line
