"""Finding and rendering the report templates (Jinja, autoescape always on).

Templates live in the checkout's top-level `templates/` folder; the wheel carries them as
`mediapipe_g4/templates`. Recording text is never marked safe: every template escapes it.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

logger = logging.getLogger("mediapipe_g4")

DEFAULT_IMAGE_WIDTH = 1280  # wide enough for a slide to be legible, small enough to embed


def template_dir() -> Path:
    """The installed `mediapipe_g4/templates`, else the checkout's top-level `templates/`."""
    installed = Path(__file__).parent / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).parents[1] / "templates"


# -- filters -------------------------------------------------------------------------------


def _hms(seconds: Any, to_int) -> tuple[int, int, int] | None:
    """(hours, minutes, seconds) of a non-negative time, or None for None or nonsense."""
    try:
        total = max(int(to_int(float(seconds))), 0)
    except (TypeError, ValueError, OverflowError):
        return None
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return hours, minutes, secs


def mmss(seconds: Any) -> str:
    """`m:ss` below an hour, `h:mm:ss` beyond; None or nonsense gives an empty string."""
    parts = _hms(seconds, math.floor)
    if parts is None:
        return ""
    hours, minutes, secs = parts
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def duration(seconds: Any) -> str:
    """A human length: `45 s`, `3 min 05 s`, `1 h 02 min`; `0.3 s` for some speech shorter than half a second
    (it read "0 s", as if none)."""
    parts = _hms(seconds, round)
    if parts is None:
        return ""
    if parts == (0, 0, 0) and float(seconds) > 0:
        return f"{max(float(seconds), 0.1):.1f} s"
    hours, minutes, secs = parts
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def fragment_seconds(seconds: Any) -> str:
    """Seconds for a media fragment (`#t=65.5`): at most one decimal, no trailing zeros."""
    try:
        value = max(float(seconds), 0.0)
    except (TypeError, ValueError, OverflowError):
        return "0"
    return f"{value:.1f}".rstrip("0").rstrip(".")


def speaker_map(speakers: Any) -> dict[str, str]:
    """`{id: name}` from the result's speakers list (names default to the id)."""
    names: dict[str, str] = {}
    for speaker in speakers or ():
        if isinstance(speaker, Mapping) and speaker.get("id") is not None:
            sid = str(speaker["id"])
            names[sid] = " ".join(str(speaker.get("name") or sid).split()) or sid  # one line: a cue, a TXT line
    return names


def resolve_speaker_name(value: Any, names: Mapping[str, str]) -> str:
    if value is None or value == "":
        return ""
    return names.get(str(value), " ".join(str(value).split()))


@jinja2.pass_context
def speaker_name_filter(context: Any, value: Any, speakers: Any = None) -> str:
    """A speaker id to its name, from `speakers` (argument, else the template's `speakers`)."""
    if speakers is None:
        speakers = context.get("speakers")
    names = speakers if isinstance(speakers, Mapping) else speaker_map(speakers)
    return resolve_speaker_name(value, names)


@functools.lru_cache(maxsize=64)
def _encode_jpeg(path: str, mtime_ns: int, max_width: int, quality: int) -> str:
    from PIL import Image

    with Image.open(path) as image:
        if image.format == "JPEG" and image.width <= max_width:
            return base64.b64encode(Path(path).read_bytes()).decode("ascii")
        image = image.convert("RGB")
        if image.width > max_width:
            height = max(1, round(image.height * max_width / image.width))
            image = image.resize((max_width, height), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        return base64.b64encode(buffer.getvalue()).decode("ascii")


def datauri(path: Any, max_width: int = DEFAULT_IMAGE_WIDTH, quality: int = 82) -> str:
    """An image file as a `data:image/jpeg;base64,...` URI (scaled down to `max_width`).

    An image that cannot be read gives an empty string (logged), so a report still renders.
    """
    if not path:
        return ""
    file = Path(path)
    try:
        stat = file.stat()
        encoded = _encode_jpeg(str(file), stat.st_mtime_ns, int(max_width), int(quality))
    except Exception as exc:  # a missing or broken keyframe must not sink the report
        logger.warning("cannot embed keyframe %s: %s", file, exc)
        return ""
    return "data:image/jpeg;base64," + encoded


# Markdown: recording text is inserted as plain text; anything markdown or HTML would read as
# markup (links, images, emphasis, tags, autolinks, tables) is backslash-escaped or HTML-escaped.
_MD_INLINE = re.compile(r"([\\`*_\[\]|~])")
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")
_MD_BARE_LINK = re.compile(r"(?i)(?<=[a-z0-9])(?::(?=//))|\bwww\.")
_MD_BLOCK_START = re.compile(r"^(\s*)(?:([#>+=-])|(\d+)([.)]))")


def md_text(value: Any) -> Markup:
    """Plain text made inert for Markdown: one line, markup characters escaped."""
    if value is None:
        return Markup("")
    text = " ".join(str(value).split())
    text = _MD_ENTITY.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_INLINE.sub(r"\\\1", text)
    # A viewer that links bare addresses (GitHub's, GitLab's) would make "https://x" or "www.x" said in the meeting
    # a live link; an escaped ":" or "." shows the same and is not one.
    text = _MD_BARE_LINK.sub(lambda m: m.group()[:-1] + "\\" + m.group()[-1], text)
    # A leading "#", "-", "1." would start a heading or list where the text begins a line.
    text = _MD_BLOCK_START.sub(_escape_block_marker, text, count=1)
    if _RIGHT_TO_LEFT.search(text):  # isolated (FSI ... PDI), as the page's <bdi>: "(49%, 28 s)" after an Arabic
        text = f"\u2068{text}\u2069"  # name showed as "(28 ,%49 s)", the bidi rules pulling it into the name's run
    return Markup(text)


_RIGHT_TO_LEFT = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")


def _escape_block_marker(match: re.Match[str]) -> str:
    if match.group(2):
        return match.group(1) + "\\" + match.group(2)
    return match.group(1) + match.group(3) + "\\" + match.group(4)


def md_paragraphs(value: Any) -> Markup:
    """Multi-paragraph plain text for Markdown: blank-line separated, each paragraph `md_text`."""
    if value is None:
        return Markup("")
    paragraphs = [p for p in re.split(r"\n\s*\n", str(value)) if p.strip()]
    return Markup("\n\n").join(md_text(p) for p in paragraphs)


def html_paragraphs(value: Any) -> Markup:
    """Plain text as escaped `<p>` paragraphs (blank lines split them)."""
    if value is None:
        return Markup("")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", str(value)) if p.strip()]
    return Markup("\n").join(Markup("<p dir=\"auto\">{}</p>").format(p) for p in paragraphs)


def make_environment(directory: Path | None = None) -> jinja2.Environment:
    """The Jinja environment for the report templates: autoescape on everywhere, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or template_dir())),
        autoescape=True,  # html, md and anything else: recording text is never trusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        mmss=mmss,
        duration=duration,
        tsec=fragment_seconds,
        speaker_name=speaker_name_filter,
        datauri=datauri,
        md=md_text,
        md_paragraphs=md_paragraphs,
        paragraphs=html_paragraphs,
    )
    return env


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared environment over `template_dir()` (cached)."""
    return make_environment()


def get_template(name: str) -> jinja2.Template:
    return environment().get_template(name)


__all__ = [
    "template_dir",
    "make_environment",
    "environment",
    "get_template",
    "mmss",
    "duration",
    "datauri",
    "md_text",
    "speaker_map",
]
