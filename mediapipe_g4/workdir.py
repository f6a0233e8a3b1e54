"""The work folder of a recording: where each stage leaves its finished result.

Media stages (decoded audio, keyframes) depend only on the file's content, so they live under the
content hash; stages whose result depends on settings live in sub-folders keyed by those settings.
Every file is written atomically, so a rerun after a crash resumes from what was finished.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs

from .errors import OutputError

_HASH_CHUNK = 1 << 20


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`--cache-dir`, else $G4MEDIA_CACHE, else the user's cache folder (e.g. ~/.cache/g4media); absolute, so the
    paths written in X.json (`work_dir`) and in the work folder hold from any folder."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("G4MEDIA_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    return platformdirs.user_cache_path("g4media").absolute()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The content hash, read once per version of the file in a process (a batch asks for it more than once:
    is it done, which work folder)."""
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=1024)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def code_key(*modules: str) -> str:
    """A short key for the code that makes a stage's result: the source of these modules of the package and the
    versions of these installed distributions ("pkg:resemblyzer"). Cached results carry it, so a release that
    changes how turns or keyframes are found makes them again instead of reusing the old ones; no version
    number that someone must remember to raise."""
    digest = hashlib.sha256()
    for name in modules:
        if name.startswith("pkg:"):
            try:
                digest.update(f"{name}={importlib.metadata.version(name[4:])}".encode())
            except importlib.metadata.PackageNotFoundError:
                digest.update(f"{name}=none".encode())
            continue
        digest.update(name.encode() + b"\0" + hashlib.sha256(_module_file(name).read_bytes()).digest())
    return digest.hexdigest()[:12]


def _module_file(name: str) -> Path:
    """The file of the package's module `name` (its source, or its compiled code where only that is installed)."""
    spec = importlib.util.find_spec(f"{__package__}.{name}")
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        raise LookupError(f"{__package__}.{name} is not a module file")  # a renamed module, not the user's doing
    return Path(spec.origin)


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable key for the settings that change a stage's result."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def media_work_dir(sha256: str, root: str | os.PathLike[str] | None = None, variant: str = "") -> Path:
    """The folder for everything derived from one recording's content; `variant` names another choice of its
    audio (`media.audio_variant`: "a2" for the second track), whose audio, turns and answers are others."""
    folder = cache_root(root) / "recordings" / (sha256[:24] + (f"-{variant}" if variant else ""))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot make the work folder {folder}: {exc.strerror or exc}; pass --cache-dir (or set "
                          "G4MEDIA_CACHE) to a folder that can be written") from exc
    return folder


@contextlib.contextmanager
def room_for_work(root: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """A full (or read-only) disk under the work folders, met while a recording's stages write there, as an
    OutputError that says where and what to do (a bare OSError reads as a bug)."""
    try:
        yield
    except OSError as exc:
        where = f"Cannot write to the work folder under {cache_root(root) / 'recordings'}: {exc.strerror or exc}."
        mine = exc.filename is not None and Path(os.fsdecode(exc.filename)).is_relative_to(cache_root(root))
        if exc.errno in (errno.EACCES, errno.EPERM) and mine:  # not a recording that cannot be read
            raise OutputError(f"{where} It is not yours to write (made by another user, or by a run with sudo?): "
                              "give it back to yourself, or pass --cache-dir (or set G4MEDIA_CACHE) to a folder "
                              "of your own.") from exc
        if exc.errno == errno.EROFS:
            raise OutputError(f"{where} Pass --cache-dir (or set G4MEDIA_CACHE) to a folder on a disk that can be "
                              "written.") from exc
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OutputError(
            f"{where} Free some space there, or pass --cache-dir (or set G4MEDIA_CACHE) to a folder with room: the "
            "decoded audio takes 64 KB per second of recording (230 MB an hour) while a recording is worked on. What "
            "was finished is kept and reused.") from exc
