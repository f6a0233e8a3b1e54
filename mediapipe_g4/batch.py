"""Many recordings: find them by content, process each, write an index, go on past failures."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import media
from .atomic import remove_stale_parts
from .errors import G4Error, MediaError, ModelError
from .index_page import failed_entry, index_entry, pending_entry, write_index
from .writers import get_writer, output_stem, output_stems, write_outputs

log = logging.getLogger("mediapipe_g4")

# Known media extensions: such a file that does not read is a failure to report. Other files are
# recordings only if FFmpeg finds sound or moving pictures in them; if not, they are not media.
MEDIA_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".mpg",
    ".mpeg", ".ogv", ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif",
    ".amr", ".caf", ".weba",
}
OUTPUT_EXTENSIONS = {".json", ".srt", ".vtt", ".txt", ".md", ".html", ".rttm"}
Changed = Callable[[dict[str, Any]], list[str]]  # an X.json's `options` -> the settings that differ now
_STILL_FORMATS = ("image2", "_pipe", "gif", "tty", "srt", "webvtt", "ass")


@dataclass
class BatchReport:
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done

    @property
    def failed(self) -> int:
        return sum(e["status"] == "failed" for e in self.entries)


def find_recordings(folder: Path, *, recursive: bool, exclude: Path | None = None) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each recording in `folder`; (path, reason) for a media-named file that is broken."""
    if not folder.is_dir():
        raise MediaError(f"{folder} is not a folder; give a folder of recordings (or use `g4media summarize FILE`)")
    pattern = "**/*" if recursive else "*"
    for path in sorted(folder.glob(pattern)):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_symlink() and not path.exists() and path.suffix.lower() in MEDIA_EXTENSIONS:
            yield path, f"{path} is a link to {os.readlink(path)}, which is not there"  # a moved or unmounted file
            continue
        if not path.is_file():
            if recursive and path.is_symlink() and path.is_dir():  # glob's ** does not go in (nor round a loop)
                log.warning("%s is a link to a folder: not followed; give that folder itself to look in it", path)
            continue
        if exclude is not None and exclude in path.resolve().parents:
            continue  # our own outputs
        suffix = path.suffix.lower()
        if suffix in OUTPUT_EXTENSIONS:
            continue
        try:
            info = media.probe(path)
        except MediaError as exc:
            if suffix in MEDIA_EXTENSIONS:
                yield path, str(exc)
            continue
        if not info.has_audio and any(tag in info.format_name for tag in _STILL_FORMATS):
            continue  # a picture or a subtitle file, not a recording
        yield path, None


def already_done(json_path: Path, sha256: str, changed: Changed | None = None, *, whole: bool = True) -> bool:
    """Whether the X.json at `json_path` was made from this content (and, with `changed`, which names the
    settings that differ from an X.json's `options`, with the same settings); with `whole`, also without notes a
    failing model cost (those are done again)."""
    try:
        result = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return _made_from(result, sha256, changed, json_path.name, whole=whole)


def _made_from(result: Any, sha256: str, changed: Changed | None, name: str, *, whole: bool = True) -> bool:
    """Whether a result read from X.json `name` was made from this content with these settings (`already_done`)."""
    try:
        if result["source"]["sha256"] != sha256:
            return False
        differ = changed(result.get("options") or {}) if changed else []
    except (KeyError, TypeError, AttributeError):
        return False
    if differ:
        log.info("%s was made with other settings (%s): doing it again", name, ", ".join(differ))
        return False
    notes = result.get("notes") if isinstance(result.get("notes"), dict) else {}
    if whole and notes.get("status") == "failed" and str(notes.get("error") or "").startswith("the model failed"):
        # a server down for a while, a GPU out of memory: worth another try, from the work that is finished
        log.info("%s: its notes were not made (%s): doing it again", name, notes.get("error"))
        return False
    return True


def default_workers(engine: str, concurrency: int) -> int:
    """Recordings at once: one in-process (the model is the bottleneck and holds the memory); with a
    model server two or more, so its batches stay full while a recording decodes, finds its speakers or
    waits on its one long notes request."""
    return 1 if engine == "transformers" else max(2, min(4, concurrency // 8))


def recordings_in(folder: Path, out_dir: Path, *, recursive: bool) -> list[tuple[Path, str | None]]:
    """`find_recordings` of a batch: a folder of outputs inside the recordings' folder is left out (a recording
    copied beside its report, for the page's player, is not a new one); outputs beside the recordings, or above
    them, leave out nothing."""
    out, root = out_dir.resolve(), folder.resolve()
    return list(find_recordings(folder, recursive=recursive, exclude=out if root in out.parents else None))


def run_batch(
    folder: Path,
    out_dir: Path,
    formats: list[str],
    process: Callable[[Path], dict[str, Any]],
    *,
    recursive: bool = False,
    redo: bool = False,
    on_file: Callable[[Path, str, str], None] | None = None,
    workers: int = 1,
    ahead: Callable[[Path], None] | None = None,
    changed: Changed | None = None,
    found: list[tuple[Path, str | None]] | None = None,
) -> BatchReport:
    """Process every recording; an index.html in `out_dir` links each output and lists each failure.

    Outputs mirror the folder structure (a/meeting.mp4 -> OUT/a/meeting.html); two recordings of one folder whose
    outputs would share a name (meeting.wav, meeting.mp3) are named in full (meeting.wav.html, `output_stems`).
    A recording is done before when its X.json holds its content hash and `changed` (`RunOptions.changed_from`)
    finds no setting changed since; `redo` does every one again. A model that cannot load stops the batch
    (every file would fail the same way). With `workers` > 1 (a model server), that many recordings are
    processed at once, so one recording's CPU stages (decode, speaker turns) overlap with the others' model
    calls and the server always has requests to batch. With one worker, `ahead(path)` is called with the next
    recording to process (not done before) as the current one
    starts, so it can be prepared meanwhile (`pipeline.Lookahead`). `found`: `recordings_in`'s, when looked
    for already (each file is probed by FFmpeg: a folder of thousands is looked through once).
    """
    formats = list(dict.fromkeys([*formats, "json"]))  # the JSON tells a later run what is done
    if found is None:
        found = recordings_in(folder, out_dir, recursive=recursive)
    by_folder: dict[Path, list[Path]] = {}
    for path, broken in found:
        if not broken:  # a broken file writes no outputs, so it takes no name from another
            by_folder.setdefault(path.parent, []).append(path)

    def owns(path: Path, stem: str) -> bool:  # outputs from before, under that name, are this recording's
        from .workdir import file_sha256

        made = out_dir / path.relative_to(folder).parent / f"{stem}.json"
        # made from it, whatever became of its notes (one to do again keeps its name); hashed only where there is one
        return made.is_file() and already_done(made, file_sha256(path), whole=False)

    # index.html at the top is the batch's own: a recording there named index.mp4 must not write its report over it.
    stems = {p: stem for parent, paths in by_folder.items()
             for p, stem in output_stems(paths, owns, reserved=["index"] if parent == folder else []).items()}
    stems.update({path: output_stem(path.name) for path, broken in found if broken})

    def one(path: Path, broken: str | None) -> tuple[dict[str, Any], str, str, bool]:
        return _one(folder, out_dir, formats, process, path, stems[path], broken, redo=redo, changed=changed)

    def announce(path: Path, broken: str | None) -> None:
        try:
            if ahead is not None and not broken and (redo or not _done(folder, out_dir, path, stems[path], changed)):
                ahead(path)
        except OSError:  # gone or unreadable: its own turn reports it
            pass

    report = BatchReport()
    if workers <= 1:
        outcomes: Iterator[tuple[int, Path, tuple[dict[str, Any], str, str, bool]]] = \
            _one_by_one(found, one, announce)
    else:
        outcomes = _concurrently(found, one, workers)
    finished: dict[int, dict[str, Any]] = {}
    try:
        for i, path, (entry, status, detail, skipped) in outcomes:
            finished[i] = entry
            if skipped:
                report.skipped.append(str(path.relative_to(folder)))
            on_file and on_file(path, status, detail)
    except BaseException as exc:
        # Stopped part-way (Ctrl-C, a shutdown, a model that cannot load): the index still links what is done
        # and lists the rest as not processed, then the stop goes on as it was.
        why = "the batch was interrupted" if isinstance(exc, KeyboardInterrupt) else f"the batch stopped: {exc}"
        entries = [finished.get(i) or pending_entry(path.relative_to(folder), why) for i, (path, _) in
                   enumerate(found)]
        if finished:
            try:
                write_index(entries, out_dir)
            except Exception:  # noqa: BLE001 - the stop's own error is the one to report
                log.debug("no index after the stop", exc_info=True)
        raise
    report.entries = [finished[i] for i in sorted(finished)]  # in the order found
    if report.entries:  # an empty index of an empty folder is no use (the command says there was nothing)
        write_index(report.entries, out_dir)
    return report


def _one_by_one(found: Iterable[tuple[Path, str | None]], one: Callable[..., Any],
                announce: Callable[[Path, str | None], None]) -> Iterator[tuple[int, Path, Any]]:
    """(position found, path, one(path, broken)) in turn; `announce` hears of each recording (path, broken)
    as the one before it starts."""
    items = enumerate(found)
    current = next(items, None)
    while current is not None:
        following = next(items, None)
        if following is not None:
            announce(*following[1])
        i, (path, broken) = current
        yield i, path, one(path, broken)
        current = following


def _done(folder: Path, out_dir: Path, path: Path, stem: str, changed: Changed | None) -> bool:
    """Whether `path`'s outputs are there, made from this very content with these settings."""
    from .workdir import file_sha256

    rel = path.relative_to(folder)
    return already_done(out_dir / rel.parent / f"{stem}.json", file_sha256(path), changed)


def _result_there(json_path: Path) -> tuple[Any, str | None]:
    """(the X.json's content, None) if it is there; (None, None) if not; (None, why) if it is there but does not
    parse (an edit went wrong: redoing the recording would overwrite the edit)."""
    try:
        return json.loads(json_path.read_text(encoding="utf-8-sig")), None
    except (FileNotFoundError, NotADirectoryError):  # (a file where its folder would be: the write says so)
        return None, None
    except (OSError, ValueError) as exc:
        return None, (f"{json_path} is there but does not read as JSON ({exc}); fix it (then `g4media render` it), "
                      "or delete it or use --fresh to make it again")


def _one(folder: Path, out_dir: Path, formats: list[str], process: Callable[[Path], dict[str, Any]], path: Path,
         stem: str, broken: str | None, *, redo: bool, changed: Changed | None
         ) -> tuple[dict[str, Any], str, str, bool]:
    """(index entry, status, detail, whether it was done before) of one recording; a ModelError propagates."""
    rel = path.relative_to(folder)
    target_dir = out_dir / rel.parent
    if broken:
        return failed_entry(rel, broken), "failed", broken, False
    json_path = target_dir / f"{stem}.json"
    before, problem = (None, None) if redo else _result_there(json_path)  # read once: judged, then indexed
    if problem:
        return failed_entry(rel, problem), "failed", problem, False
    try:
        from .workdir import file_sha256

        if before is not None and _made_from(before, file_sha256(path), changed, json_path.name):
            # A format asked for now, or a report deleted since: written from the result there, as `render` does
            # (it was left out, and only --fresh, which redoes the model's work, brought it)
            missing = [f for f in formats if not (target_dir / f"{stem}.{get_writer(f).extension}").exists()]
            remove_stale_parts(target_dir)  # a killed write's temporary file, where no write comes to sweep it
            if missing:
                work = Path(str(before.get("work_dir") or target_dir))
                write_outputs(before, target_dir, stem, missing, media_dir=work if work.is_dir() else target_dir)
            outputs = [target_dir / f"{stem}.{ext}" for ext in _extensions(formats)
                       if (target_dir / f"{stem}.{ext}").exists()]
            return (_relative(index_entry(before, outputs, name=rel), out_dir), "done before",
                    _notes_missing(before), True)
        result = process(path)
        outputs = write_outputs(result, target_dir, stem, formats, media_dir=result.get("work_dir"))
    except ModelError:
        raise
    except G4Error as exc:
        return failed_entry(rel, str(exc)), "failed", str(exc), False
    except Exception as exc:  # noqa: BLE001 - one broken recording must not end the batch
        log.debug("failure on %s", path, exc_info=True)
        detail = f"unexpected {type(exc).__name__}: {exc}"
        return failed_entry(rel, detail), "failed", detail, False
    detail = ", ".join(p.name for p in outputs)
    if missing := _notes_missing(result):
        detail += f" ({missing})"
    return _relative(index_entry(result, outputs, name=rel), out_dir), "ok", detail, False


def _notes_missing(result: Mapping[str, Any]) -> str:
    """"notes not produced: why" for a result that asked for notes and has none, as summarize says it (a batch
    line read "ok" and nothing more); "" otherwise."""
    notes = result.get("notes") or {}
    asked = (result.get("options") or {}).get("summarize", True)
    return f"notes not produced: {notes.get('error')}" if asked and notes.get("status") not in (None, "ok") else ""


def _concurrently(found: Iterable[tuple[Path, str | None]], one: Callable[..., Any], workers: int
                  ) -> Iterator[tuple[int, Path, Any]]:
    """(position found, path, one(path, broken)) as recordings finish, `workers` at a time. Recordings with the
    same content (one work folder) never run at once. An error (a ModelError) stops new work; the recordings
    under way finish, then it is raised. Daemon threads, so Ctrl-C ends the batch at once."""
    import queue
    import threading

    from .workdir import file_sha256

    jobs: queue.Queue[tuple[int, Path, str | None] | None] = queue.Queue(maxsize=workers * 2)
    results: queue.SimpleQueue[tuple[int, Path, Any, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def work() -> None:
        while (job := jobs.get()) is not None:
            i, path, broken = job
            if stop.is_set():
                continue  # drain: nothing new after an error
            try:
                key = "" if broken else file_sha256(path)
                with guard:
                    lock = locks.setdefault(key, threading.Lock()) if key else threading.Lock()
                with lock:
                    results.put((i, path, one(path, broken), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                results.put((i, path, None, exc))

    def feed() -> None:
        try:
            for i, (path, broken) in enumerate(found):
                if stop.is_set():
                    break
                jobs.put((i, path, broken))
        except BaseException as exc:  # noqa: BLE001
            results.put((-1, Path("."), None, exc))
        finally:
            for _ in range(workers):
                jobs.put(None)

    threads = [threading.Thread(target=work, name=f"g4media-batch-{k}", daemon=True) for k in range(workers)]
    threads.append(threading.Thread(target=feed, name="g4media-batch-find", daemon=True))
    for t in threads:
        t.start()
    error: BaseException | None = None
    while True:
        try:
            i, path, outcome, exc = results.get(timeout=0.2)
        except queue.Empty:
            if not any(t.is_alive() for t in threads) and results.empty():
                break
            continue
        if exc is None:
            yield i, path, outcome
        elif error is None:
            error = exc
            stop.set()
    if error is not None:
        raise error


def _extensions(formats: list[str]) -> list[str]:
    return [get_writer(f).extension for f in formats]


def _relative(entry: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    entry["outputs"] = [os.path.relpath(p, out_dir) for p in entry["outputs"]]
    return entry
