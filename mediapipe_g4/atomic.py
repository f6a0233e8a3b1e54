"""Atomic file writes: a temporary file beside the target, renamed over it only when complete."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: a writer is known by its pid alone
    fcntl = None  # type: ignore[assignment]

# Inside `atomic_group`: the (temporary, target, held descriptor) of each file written in full, renamed together
# when the group ends (the temporary file stays held until then: `hold`).
_GROUP: contextvars.ContextVar[list[tuple[Path, Path, int]] | None] = contextvars.ContextVar("atomic_group",
                                                                                             default=None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    A crash at any moment leaves either the old file or the new one, never half of one. A target that is not a
    regular file (`/dev/stdout`, a named pipe) is written straight to: renaming over it would replace it.
    """
    target = Path(path)
    if target.exists() and not target.is_file():
        yield target
        return
    short = target.name.encode("utf-8")[:60].decode("utf-8", "ignore")  # names are limited in bytes
    remove_stale_parts(target.parent)
    # The writer's pid in the name: what a killed writer left is known as such (`remove_stale_parts`).
    tmp_path = target.parent / f".{short}.{os.getpid()}-{secrets.token_hex(4)}.part"
    # 0o666 lets the umask decide the mode, as for any ordinary new file.
    held: int | None = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    hold(held)
    try:
        yield tmp_path
        fsync(tmp_path)  # the data is on disk before the name points at it
        group = _GROUP.get()
        fd, held = held, None  # from here its rename lets go of it, once
        if group is not None:
            group.append((tmp_path, target, fd))  # held until its rename
        else:
            _replace(tmp_path, target, fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    finally:
        if held is not None:
            os.close(held)


def _replace(tmp_path: Path, target: Path, held: int) -> None:
    """Rename the held temporary file over its target, then let go of it (before, where there are no file locks:
    Windows renames no file that is open)."""
    if fcntl is None:
        os.close(held)
        os.replace(tmp_path, target)
        return
    try:
        os.replace(tmp_path, target)
    finally:
        os.close(held)


def fsync(path: str | os.PathLike[str]) -> None:
    """Flush `path`'s data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hold(fd: int) -> None:
    """Mark the temporary file open as `fd` as being written, for as long as it stays open: `remove_stale_parts`
    leaves it alone even where the pid in its name means nothing (a writer in another container's pid namespace).
    Tested on a local disk; over NFS, whose flock is emulated with POSIX locks, the lock may be let go when the
    file is written by its path (untested)."""
    if fcntl is not None:  # exclusive, on a descriptor open for writing, as POSIX locks need
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _held(path: Path) -> bool:
    """Whether a writer holds `path` (`hold`)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared, on a descriptor open for reading (NFS, as above)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def atomic_group() -> Iterator[None]:
    """The files written with `atomic_path` inside it replace their targets together, once all of them are
    complete: a write that fails (a full disk at the third of five reports) leaves every target as it was, not
    some new and some old."""
    pending: list[tuple[Path, Path, int]] = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        for tmp_path, _, held in pending:
            os.close(held)
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        raise
    finally:
        _GROUP.reset(token)
    # A Ctrl-C between two renames (microseconds) leaves some outputs new and the rest as they were, each whole,
    # and no temporary file. (Holding signals back meanwhile, by swapping their handlers, could lose one: a storm
    # of them left a handler swapped for good.)
    for i, (tmp_path, target, held) in enumerate(pending):
        try:
            _replace(tmp_path, target, held)
        except BaseException:
            for left, _, still in pending[i:]:
                if still != held:  # the failed one's was let go of by _replace
                    os.close(still)
                with contextlib.suppress(FileNotFoundError):
                    left.unlink()
            raise


_SWEPT: set[str] = set()  # folders whose leftovers this process removed already


def remove_stale_parts(folder: Path) -> None:
    """Remove the temporary files `.NAME.PID[-...].part` in `folder` that a writer killed mid-write (SIGKILL, a
    crash, a power cut) left behind: those of a process that is gone and that no writer holds (`hold`). A writer
    still at work keeps its own. Once a folder per process: a work folder holds an answer file per clip (thousands
    for a long meeting), and listing it again for every answer would cost the square of their number."""
    key = os.path.abspath(folder)
    if key in _SWEPT:
        return
    try:
        found = [p for p in Path(folder).iterdir() if p.name.startswith(".") and p.name.endswith(".part")]
    except OSError:
        return
    _SWEPT.add(key)
    for part in found:
        pid = part.name[: -len(".part")].rsplit(".", 1)[-1].split("-")[0]
        if pid.isdigit() and not process_running(int(pid)) and not _held(part):
            with contextlib.suppress(OSError):
                part.unlink()


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's, or a system that cannot tell: keep its file
        return True
    return True


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` atomically, making the folder if needed (work-folder files)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
