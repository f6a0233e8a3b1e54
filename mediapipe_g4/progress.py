"""Progress for long work: the library calls `hook(step, completed, total)`; the CLI renders it.

On a terminal the hook drives a rich progress bar per step (done/total and ETA); otherwise it logs a
plain line now and then, so logs of batch jobs stay readable.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

Hook = Callable[[str, int, int], None]

log = logging.getLogger("mediapipe_g4")


def null_hook(step: str, completed: int, total: int) -> None:
    """A hook that ignores progress."""


@contextlib.contextmanager
def progress_hook(enabled: bool = True, *, interval: float = 10.0) -> Iterator[Hook]:
    """A hook for the duration of a command: rich bars on a terminal, periodic log lines elsewhere."""
    if not enabled:
        yield null_hook
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        tasks: dict[str, int] = {}
        with Progress(
            TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        ) as bar:

            def hook(step: str, completed: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=total or None)
                bar.update(tasks[step], completed=completed, total=total or None)

            yield hook
        return

    last: dict[str, float] = {}

    def log_hook(step: str, completed: int, total: int) -> None:
        now = time.monotonic()
        done = total and completed >= total
        if done or now - last.get(step, 0.0) >= interval:
            last[step] = now
            log.info("%s: %d/%d", step, completed, total)

    yield log_hook
