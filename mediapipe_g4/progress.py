"""Progress for long work: the library calls `hook(step, completed, total)`; the CLI renders it.

On a terminal the hook drives a rich progress bar per step (done/total and ETA); otherwise a step that runs
longer than a few seconds writes a plain line to stderr now and then, so logs of batch jobs show where they are
and stay readable.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator

Hook = Callable[[str, int, int], None]

# How the steps read (the library names them for code); steps counted in seconds of the recording say so.
LABELS = {"notes_section": "notes (parts)", "notes_merge": "notes (merge)", "generate": "model", "keyframes": "slides"}
SECONDS = {"decode", "speech", "speakers", "keyframes"}


def describe(step: str, completed: int, total: int) -> str:
    """`transcribe 12/60`, `speech 300/3600 s`."""
    return f"{LABELS.get(step, step)} {completed}/{total}{' s' if step in SECONDS else ''}"


@functools.cache
def terminal_console():
    """The one rich console on stderr: the progress bars and the CLI's log handler share it, so a log line is printed
    above the bars (a second console would write into the middle of them)."""
    from rich.console import Console

    return Console(stderr=True)


def time_column():
    """`0:01:23 left` once a step's speed is known; before that (one long request, such as the notes: no speed until
    it is done) `0:00:41 so far`, so a step that takes minutes is seen to be under way; a finished step its time."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    def clock(seconds: float | None) -> str:
        seconds = int(seconds or 0)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    class TimeColumn(ProgressColumn):
        max_refresh = 0.5  # the estimate does not jump about

        def render(self, task) -> Text:
            if task.finished:
                return Text(clock(task.finished_time if task.finished_time is not None else task.elapsed),
                            style="progress.elapsed")
            if task.time_remaining is not None:
                return Text(f"{clock(task.time_remaining)} left", style="progress.remaining")
            return Text(f"{clock(task.elapsed)} so far", style="progress.elapsed")

    return TimeColumn()


def null_hook(step: str, completed: int, total: int) -> None:
    """A hook that ignores progress."""


@contextlib.contextmanager
def progress_hook(enabled: bool = True, *, interval: float = 10.0) -> Iterator[Hook]:
    """A hook for the duration of a command: rich bars on a terminal, periodic log lines elsewhere."""
    if not enabled:
        yield null_hook
        return
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        tasks: dict[str, int] = {}
        with Progress(
            TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), time_column(),
            console=terminal_console(), transient=True,
        ) as bar:

            def hook(step: str, completed: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(LABELS.get(step, step), total=total or None)
                bar.update(tasks[step], completed=completed, total=total or None)

            yield hook
        return

    started: dict[str, float] = {}
    said: dict[str, float] = {}
    seen: dict[str, tuple[int, int]] = {}
    latest: list[str] = []  # the step heard of last: the one under way
    lock = threading.Lock()
    stop = threading.Event()

    def say(step: str, now: float, suffix: str = "") -> None:
        said[step] = now
        sys.stderr.write(f"g4media: {describe(step, *seen[step])}{suffix}\n")
        sys.stderr.flush()

    def line_hook(step: str, completed: int, total: int) -> None:
        # Straight to stderr, whatever the log level: a long job whose output goes to a file shows where it is.
        # A step shorter than `interval` says nothing, so short runs and scripts stay quiet.
        with lock:
            now = time.monotonic()
            before = seen.get(step)
            seen[step] = (completed, total)
            latest[:] = [step]
            if before is not None and (completed < before[0] or total != before[1]):  # it begins again (a batch)
                started.pop(step, None)
                said.pop(step, None)
            start = started.setdefault(step, now)
            if step not in said and now - start < interval:
                return
            if (bool(total) and completed >= total) or now - said.get(step, start) >= interval:
                say(step, now)

    def heartbeat() -> None:
        # One request can take minutes (a meeting's notes on a CPU): the step under way says it is still going.
        while not stop.wait(interval / 2):
            with lock:
                if not latest:
                    continue
                step = latest[0]
                completed, total = seen[step]
                now = time.monotonic()
                if (not total or completed < total) and now - said.get(step, started[step]) >= interval:
                    say(step, now, f", {now - started[step]:.0f} s in")

    ticker = threading.Thread(target=heartbeat, name="g4media-progress", daemon=True)
    ticker.start()
    try:
        yield line_hook
    finally:
        stop.set()
