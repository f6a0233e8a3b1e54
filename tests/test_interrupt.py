"""Stopping a run part-way (Ctrl-C, SIGTERM, a full disk) leaves nothing half-made that a rerun would trust.

Each test runs a small script in a process of its own session, as a terminal runs a command in a process group of
its own, and sends the signal to that whole group at a point the script announces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mediapipe_g4 import video

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX")


def run_until(script: str, *args: str, signum: int = signal.SIGINT, ready: str = "ready", twice: bool = False,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `script` with `args`; once it prints `ready`, send `signum` to its process group (what a terminal's
    Ctrl-C does), `twice`: to the process, then to its group (what `timeout` does); its stdout, stderr and exit
    status."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == ready:
                if twice:
                    os.kill(proc.pid, signum)
                os.killpg(proc.pid, signum)
                break
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


KEYFRAMES_IN_A_THREAD = """
    import sys, time
    from mediapipe_g4 import media, video
    from mediapipe_g4.pipeline import Background

    said = []

    def hook(step, done, total):
        if done >= 10 and not said:
            said.append(done)
            print("ready", flush=True)
            time.sleep(0.5)  # the Ctrl-C comes now, while FFmpeg is still decoding frames

    job = Background(lambda h: video.extract_keyframes(sys.argv[1], sys.argv[2], hook=h), hook, "keyframes")
    try:
        job.wait()
    except KeyboardInterrupt:  # as the pipeline does: stop the slides, then go
        time.sleep(3)  # the main thread was in native code (speech detection), which Python does not interrupt
        job.cancel()
        job.wait()
        sys.exit(130)
"""


def test_ctrl_c_while_finding_slides_caches_no_partial_keyframes(samples_dir, tmp_path):
    # The terminal's Ctrl-C reaches FFmpeg too; one that ended its frames early looked like a video that ends
    # there, and the slides found so far were cached as all of them: a rerun showed none after that point.
    done = run_until(KEYFRAMES_IN_A_THREAD, str(samples_dir / "standup.mp4"), str(tmp_path / "stopped"))
    assert done.returncode == 130, done.stderr
    index = tmp_path / "stopped" / "keyframes" / "index.json"
    if index.exists():  # finished before the cancel came: then it must be all of them
        whole = video.extract_keyframes(samples_dir / "standup.mp4", tmp_path / "whole")
        assert [k["time"] for k in json.loads(index.read_text())["keyframes"]] == [k.time for k in whole]


HALF_WRITTEN_OUTPUT = """
    import sys, time
    import click
    from mediapipe_g4 import cli
    from mediapipe_g4.atomic import atomic_path

    @cli.main.command()
    @click.argument("target")
    def hold(target):
        with atomic_path(target) as tmp:
            tmp.write_text("half of it")
            print("ready", flush=True)
            time.sleep(60)

    sys.argv[:] = ["g4media", "hold", sys.argv[1]]
    cli.run()
"""


@pytest.mark.parametrize(("signum", "twice", "status", "said"), [
    (signal.SIGINT, False, 130, "interrupted"),
    (signal.SIGTERM, False, 143, "stopped by SIGTERM"),  # a laptop shutting down, `kill`
    (signal.SIGTERM, True, 143, "stopped by SIGTERM"),  # `timeout`: to the process, then to its group
    (signal.SIGHUP, False, 129, "stopped by SIGHUP"),  # the terminal closed
])
def test_a_signal_ends_the_command_with_one_line_and_no_temporary_file(tmp_path, signum, twice, status, said):
    # SIGTERM used to end the process on the spot: the temporary file of an output stayed (a 230 MB-an-hour
    # `.audio.f32.PID.part` in the work folder), and on a terminal the progress bar stayed half-drawn and the
    # cursor hidden.
    done = run_until(HALF_WRITTEN_OUTPUT, str(tmp_path / "notes.html"), signum=signum, twice=twice)
    assert done.returncode == status
    assert done.stderr == f"Error: {said}; finished work is kept in the work folder and reused next time\n"
    assert list(tmp_path.iterdir()) == []


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    # kill -9 (or a power cut) mid-write cannot be caught: its temporary file stayed for good, beside the outputs
    # or in the work folder. The next write of that file removes it; a writer still at work keeps its own.
    from mediapipe_g4.atomic import write_text

    killed = run_until(HALF_WRITTEN_OUTPUT, str(tmp_path / "notes.html"), signum=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".notes.html.") and left.name.endswith(".part")
    working = tmp_path / f".notes.html.{os.getpid()}-0123abcd.part"  # this process: at work
    working.write_text("mine")
    write_text(tmp_path / "notes.html", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([working.name, "notes.html"])
    assert (tmp_path / "notes.html").read_text() == "whole"


def test_a_folder_is_swept_for_leftovers_once(tmp_path, monkeypatch):
    # Every atomic write looked through its folder for what killed writers left: a work folder holds an answer
    # file per clip, so a 3-hour meeting's 3,000 answers listed the folder 3,000 times, growing each time.
    from mediapipe_g4 import atomic

    listed = []
    real = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append(self) or real(self))
    for i in range(50):
        atomic.write_text(tmp_path / f"answer{i}.json", "{}")
    assert listed == [tmp_path] and len(list(real(tmp_path))) == 50
