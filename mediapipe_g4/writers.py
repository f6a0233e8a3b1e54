"""Output writers: one result dict (the `X.json` schema) to json, srt, vtt, txt, md and html.

A registry as in openai/whisper's `utils.py`: `get_writer("srt").write(result, path)`, or
`write_outputs(result, out_dir, stem, ["html", "md"])` for several at once. Every file is written
atomically (a temporary file in the same folder, renamed over the target when complete), so a crash
or a failing render leaves the old file, never half of a new one.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import logging
import os
import re
import sys
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import jinja2

from .atomic import atomic_group, atomic_path
from .errors import OutputError
from .records import clock
from .report_view import report_context
from .result_fields import plain, readable, readable_copy, sorted_segments
from .subtitles import speaker_prefix, subtitle_cues, subtitle_time, webvtt, wrap_cue
from .templating import get_template, resolve_speaker_name, speaker_map, template_dir

logger = logging.getLogger("mediapipe_g4")

stamp = clock  # `mm:ss` below an hour, `h:mm:ss` beyond (TXT lines)


# -- atomic files ----------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike[str], chunks: Iterable[str]) -> Path:
    """Write text chunks to `path` atomically (UTF-8, `\\n` newlines).

    The chunks are written to a hidden temporary file beside `path`, which replaces `path` only
    once every chunk is written and synced. Whatever goes wrong (a write error, or an exception
    raised while the chunks are produced) removes the temporary file and leaves `path` as it was.
    """
    target = Path(path)
    try:
        with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
    except BaseException as exc:
        if isinstance(exc, jinja2.TemplateNotFound):  # an IOError too, so tested first
            raise OutputError(
                f"Cannot write {target.name}: the report template {exc.name!r} is missing "
                f"from {template_dir()}. Reinstall g4media."
            ) from exc
        if isinstance(exc, jinja2.TemplateError):
            raise OutputError(f"Cannot render {target.name}: {exc}. This is a bug; please report it.") from exc
        if isinstance(exc, OSError):
            raise OutputError(cannot_write(target, exc)) from exc
        raise
    logger.debug("wrote %s", target)
    return target


def cannot_write(path: Path, exc: OSError) -> str:
    """The one-line error for an output that cannot be written."""
    reason = exc.strerror or str(exc)
    return f"Cannot write {path}: {reason}. Check that the folder exists, is writable and has free space."


# -- names -------------------------------------------------------------------------------------

_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
MAX_STEM_BYTES = 150  # leaves room for the extension and a temporary suffix within 255 bytes


def safe_stem(name: str) -> str:
    """A file stem that stays inside its folder on any system.

    Spaces and unicode are kept; path separators, control characters and characters Windows forbids become `_`,
    bytes that are not UTF-8 become U+FFFD (`readable`); leading dots go (no hidden files, never `.` or `..`).
    Empty gives `recording`.
    """
    stem = readable(_UNSAFE_NAME_CHARS.sub("_", unicodedata.normalize("NFC", str(name))))
    stem = " ".join(stem.split()).strip(" .")
    encoded = stem.encode("utf-8")
    if len(encoded) > MAX_STEM_BYTES:
        stem = encoded[:MAX_STEM_BYTES].decode("utf-8", "ignore").strip(" .")
    return stem or "recording"


def output_stem(source_name: str) -> str:
    """The output stem for a recording: its file name without folder or extension, made safe."""
    base = re.split(r"[/\\]", str(source_name))[-1]
    stem = Path(base).stem if Path(base).suffix else base
    return safe_stem(stem)


def output_stems(paths: Iterable[Path], owns: Callable[[Path, str], bool] | None = None,
                 reserved: Iterable[str] = ()) -> dict[Path, str]:
    """The output stems of recordings whose outputs go to one folder, none shared: each one's `output_stem`, or,
    where two would share it (meeting.wav and meeting.mp3; Meeting.mp4 too on macOS and Windows, whose disks are
    blind to case), their whole names (meeting.wav, meeting.mp3), except that one for which `owns(path, stem)`
    holds (its outputs from before are there under the plain stem) keeps it; a name still shared (the same name
    from two folders) gets -2, -3 after it, in the order given. A `reserved` stem (the batch's `index`) is shared
    with a file that is no recording's: a recording of that name is named in full (index.mp4.html)."""
    paths = list(dict.fromkeys(paths))

    def key(stem: str) -> str:
        return stem.casefold() if sys.platform in ("darwin", "win32") else stem

    taken: set[str] = {key(stem) for stem in reserved}
    plain = {p: output_stem(p.name) for p in paths}
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    for p, stem in plain.items():
        groups[key(stem)].append(p)
    stems = {}
    for stem_key, group in groups.items():
        keeper = [p for p in group if owns and owns(p, plain[p])] if len(group) > 1 else group
        for p in group:
            alone = stem_key not in taken and (len(group) == 1 or keeper == [p])
            whole = safe_stem(re.split(r"[/\\]", p.name)[-1])
            # Alone now, its outputs from before under its whole name (its namesake is gone) stay its own: named
            # plainly, it was done again and those were left behind
            if alone and len(group) == 1 and owns and whole != plain[p] and owns(p, whole) \
                    and not owns(p, plain[p]):
                alone = False
            stems[p] = plain[p] if alone else whole
    out = {}
    for p in paths:
        stem, n = stems[p], 1
        while key(stem) in taken:
            n += 1
            # The number fits the stem's length: put after a stem at the limit, `safe_stem` cut it off again, and
            # two long names alike for 150 bytes (50 Chinese characters) wrote one set of outputs
            suffix = f"-{n}"
            stem = safe_stem(stems[p].encode()[: MAX_STEM_BYTES - len(suffix)].decode("utf-8", "ignore")) + suffix
        taken.add(key(stem))
        out[p] = stem
    return out


# -- the writers -----------------------------------------------------------------------------


class Writer(ABC):
    """Writes one result to one file. Subclasses produce the text in chunks (`render`)."""

    name: ClassVar[str]
    extension: ClassVar[str]

    def write(
        self,
        result: Mapping[str, Any],
        path: str | os.PathLike[str],
        *,
        media_dir: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write `result` to `path` atomically.

        `media_dir` is the folder that relative keyframe `image_path`s are relative to (the
        recording's work folder); without it they are taken relative to `path`'s folder.
        """
        target = Path(path)
        media = Path(media_dir) if media_dir is not None else None
        return atomic_write(target, self.render(result, target, media_dir=media))

    @abstractmethod
    def render(self, result: Mapping[str, Any], path: Path, *, media_dir: Path | None) -> Iterator[str]:
        """Yield the file's text in chunks."""


class JSONWriter(Writer):
    name = "json"
    extension = "json"

    def render(self, result, path, *, media_dir):
        data = copy.deepcopy(plain(result))
        for keyframe in data.get("keyframes") or ():
            if isinstance(keyframe, dict) and keyframe.get("image_path"):
                portable = _portable_image_path(keyframe["image_path"], media_dir, path.parent)
                if portable is None:
                    del keyframe["image_path"]
                else:
                    keyframe["image_path"] = portable
        yield json.dumps(data, ensure_ascii=False, indent=2)
        yield "\n"


def _srt_text(text: str) -> str:
    """Cue text that SRT players show as it is: no `-->` (a timing line to them), no `<i>` or `</font>` (tags they
    apply: a `<` before a tag name gets a U+2060 WORD JOINER, which shows as nothing), and no `{\\an8}` (an ASS
    override block: its brace becomes a full-width one)."""
    text = re.sub(r"-{2,}>", "->", text)
    return re.sub(r"<(?=/?[A-Za-z])", "<\u2060", text).replace("{\\", "\uff5b\\")


class SRTWriter(Writer):
    name = "srt"
    extension = "srt"

    def render(self, result, path, *, media_dir):
        for number, cue in enumerate(subtitle_cues(result, clean=_srt_text), start=1):
            lines = wrap_cue(speaker_prefix(cue.speaker), cue.text)
            yield f"{number}\n{subtitle_time(cue.start, ',')} --> {subtitle_time(cue.end, ',')}\n"
            yield "\n".join(lines) + "\n\n"


class VTTWriter(Writer):
    name = "vtt"
    extension = "vtt"

    def render(self, result, path, *, media_dir):
        yield from webvtt(subtitle_cues(result))


class TXTWriter(Writer):
    name = "txt"
    extension = "txt"

    def render(self, result, path, *, media_dir):
        names = speaker_map(result.get("speakers"))
        for seg in sorted_segments(result):
            speaker = resolve_speaker_name(seg["speaker"], names)
            who = f" {speaker}:" if speaker else ""
            yield f"[{stamp(seg['start'])}]{who} {seg['text']}\n"


class _TemplateWriter(Writer):
    template: ClassVar[str]

    def render(self, result, path, *, media_dir):
        context = report_context(result, out_dir=path.parent, media_dir=media_dir)
        yield from get_template(self.template).generate(**context)


class MarkdownWriter(_TemplateWriter):
    name = "md"
    extension = "md"
    template = "report.md.j2"


class HTMLWriter(_TemplateWriter):
    name = "html"
    extension = "html"
    template = "report.html.j2"


WRITERS: dict[str, type[Writer]] = {
    w.name: w for w in (JSONWriter, SRTWriter, VTTWriter, TXTWriter, MarkdownWriter, HTMLWriter)
}


def get_writer(name: str) -> Writer:
    """The writer for a format name (`json`, `srt`, `vtt`, `txt`, `md`, `html`)."""
    key = str(name).strip().lower().lstrip(".")
    if key == "markdown":
        key = "md"
    try:
        return WRITERS[key]()
    except KeyError:
        raise OutputError(f"Unknown output format {name!r}; choose from {', '.join(WRITERS)} (or all).") from None


def write_outputs(
    result: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    stem: str,
    formats: Iterable[str] | str,
    *,
    media_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write `out_dir/stem.<ext>` for each format; returns the paths in the order asked.

    The stem is made safe (`safe_stem`), so no output lands outside `out_dir`. A format that
    would overwrite the recording itself is refused.
    """
    names = [f for f in re.split(r"[,\s]+", formats) if f] if isinstance(formats, str) else list(formats)
    if "all" in names:
        names = list(WRITERS)
    writers: list[Writer] = []
    for name in names:
        writer = get_writer(name)  # all validated before anything is written
        if writer.name not in {w.name for w in writers}:
            writers.append(writer)
    result = readable_copy(plain(result))  # a non-UTF-8 file name, a control character typed into X.json
    directory = Path(out_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # mkdir's word for a file where the folder would be
        raise OutputError(cannot_write(directory, OSError(0, f"Not a directory: {directory} is a file"))) from exc
    except OSError as exc:
        raise OutputError(cannot_write(directory, exc)) from exc
    stem = safe_stem(stem)
    source_path = (result.get("source") or {}).get("path")
    paths = []
    for writer in writers:
        path = directory / f"{stem}.{writer.extension}"
        if path.resolve().parent != directory.resolve():  # safe_stem makes this impossible
            raise OutputError(f"Refusing to write {path}: it is outside {directory}.")
        if source_path and _same_file(path, Path(str(source_path))):
            raise OutputError(
                f"Refusing to write {path}: it is the recording itself. Choose another folder with -o."
            )
        paths.append(path)
    try:
        with atomic_group():  # all the outputs, or none: never a new X.json beside an old X.html
            for writer, path in zip(writers, paths):
                writer.write(result, path, media_dir=media_dir)
    except OSError as exc:  # the renames at the end (the writes raise OutputError already)
        raise OutputError(cannot_write(directory, exc)) from exc
    return paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False




def _portable_image_path(image_path: Any, media_dir: Path | None, out_dir: Path) -> str | None:
    """The keyframe path relative to the work folder (or the output folder); None if absolute elsewhere."""
    path = Path(str(image_path))
    if not path.is_absolute():
        return path.as_posix()
    for base in (media_dir, out_dir):
        if base is None:
            continue
        with contextlib.suppress(ValueError, OSError):
            return path.resolve().relative_to(Path(base).resolve()).as_posix()
    return None
