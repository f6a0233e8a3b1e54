"""The report's view of a result: everything the HTML and Markdown templates show, computed once
(speaker names, colours and shares, timeline positions, slides, notes, the transcript with chapters)."""

from __future__ import annotations

import base64
import colorsys
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup

from . import __version__
from .result_fields import finite_float, one_line, plain, recording_duration, sorted_segments, source_name
from .subtitles import subtitle_cues, webvtt
from .templating import duration as human_duration
from .templating import mmss

logger = logging.getLogger("mediapipe_g4")

# Calm, distinguishable speaker colours (readable as text on white: 4.5:1 or more, and as blocks): sixteen, the second
# eight darker than the first, so that a meeting's ninth speaker does not wear the first one's colour.
PALETTE = (
    "#3d6fb6", "#b05f35", "#398254", "#8459b0", "#278085", "#b94a67", "#807428", "#5b6b80",
    "#a63a2e", "#6e4a12", "#9a2f7e", "#4a6413", "#0e6650", "#4450a8", "#6a4a78", "#8a3b52",
)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".ogv", ".avi", ".wmv", ".mpg", ".mpeg", ".ts"}

# The report's only script, present when the recording sits beside it: a time link seeks the
# page's player instead of opening the file, and docks the player if it is scrolled away.
# The page's Content-Security-Policy allows exactly this script (by hash) and nothing else.
PLAYER_SCRIPT = """
(function () {
  var player = document.getElementById("player");
  if (!player) return;
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-t]");
    if (!link) return;
    event.preventDefault();
    player.currentTime = parseFloat(link.getAttribute("data-t")) || 0;
    var box = player.getBoundingClientRect();
    if (box.bottom < 0 || box.top > window.innerHeight) document.body.classList.add("docked");
    var playing = player.play();
    if (playing && playing.catch) playing.catch(function () {});
  });
  function undock() {
    document.body.classList.remove("docked");
    player.pause();
  }
  document.getElementById("undock").addEventListener("click", undock);
  document.addEventListener("keydown", function (event) {  // Escape closes the docked player
    if (event.key === "Escape" && document.body.classList.contains("docked")) undock();
  });
})();
"""
PLAYER_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(PLAYER_SCRIPT.encode()).digest()).decode()


def _media_link(result: Mapping[str, Any], out_dir: Path) -> dict[str, str] | None:
    """A link to the recording when it sits beside the report, else None (plain times)."""
    name = source_name(result)
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        return None
    if not (out_dir / name).is_file():
        return None
    suffix = Path(name).suffix.lower()
    kind = "video" if suffix in VIDEO_SUFFIXES else "audio"
    return {"href": urllib.parse.quote(name, safe=""), "kind": kind, "name": name}


def _captions(result: Mapping[str, Any]) -> str | None:
    """The player's captions track: the speaker-prefixed WebVTT of `X.vtt`, as a data: URI. A report opened from
    disk cannot load the X.vtt beside it (a track must be same-origin, and browsers treat every file: URL as an
    origin of its own); a data: URI loads, once the page's media-src allows `data:`. Base64, so no recording
    text can end the attribute or the URI. None when nothing was transcribed."""
    cues = subtitle_cues(result)
    if not cues:
        return None
    vtt = "".join(webvtt(cues)).encode("utf-8")
    return "data:text/vtt;base64," + base64.b64encode(vtt).decode("ascii")


# Language names as `--language` takes them (the model card's prompt wants a name: "English"), in English and
# in their own words, to BCP 47 tags for the report's lang attributes. A name not here gives no tag.
LANGUAGE_TAGS = {
    "afrikaans": "af", "arabic": "ar", "bengali": "bn", "bangla": "bn", "bulgarian": "bg", "cantonese": "yue",
    "catalan": "ca", "català": "ca", "chinese": "zh", "mandarin": "zh", "中文": "zh", "croatian": "hr",
    "hrvatski": "hr", "czech": "cs", "čeština": "cs", "danish": "da", "dansk": "da", "dutch": "nl",
    "nederlands": "nl", "flemish": "nl", "english": "en", "estonian": "et", "eesti": "et", "filipino": "fil",
    "tagalog": "tl", "finnish": "fi", "suomi": "fi", "french": "fr", "français": "fr", "german": "de",
    "deutsch": "de", "greek": "el", "ελληνικά": "el", "hebrew": "he", "עברית": "he", "hindi": "hi",
    "हिन्दी": "hi", "hungarian": "hu", "magyar": "hu", "icelandic": "is", "íslenska": "is", "indonesian": "id",
    "bahasa indonesia": "id", "irish": "ga", "gaeilge": "ga", "italian": "it", "italiano": "it",
    "japanese": "ja", "日本語": "ja", "korean": "ko", "한국어": "ko", "latvian": "lv", "latviešu": "lv",
    "lithuanian": "lt", "lietuvių": "lt", "malay": "ms", "bahasa melayu": "ms", "marathi": "mr",
    "norwegian": "no", "norsk": "no", "norwegian bokmål": "nb", "bokmål": "nb", "norwegian nynorsk": "nn",
    "nynorsk": "nn", "persian": "fa", "farsi": "fa", "فارسی": "fa", "polish": "pl", "polski": "pl",
    "portuguese": "pt", "português": "pt", "brazilian portuguese": "pt-BR", "romanian": "ro", "română": "ro",
    "russian": "ru", "русский": "ru", "serbian": "sr", "српски": "sr", "slovak": "sk", "slovenčina": "sk",
    "slovenian": "sl", "slovene": "sl", "slovenščina": "sl", "spanish": "es", "español": "es",
    "castellano": "es", "swahili": "sw", "kiswahili": "sw", "swedish": "sv", "svenska": "sv", "tamil": "ta",
    "telugu": "te", "thai": "th", "ไทย": "th", "turkish": "tr", "türkçe": "tr", "ukrainian": "uk",
    "українська": "uk", "urdu": "ur", "اردو": "ur", "vietnamese": "vi", "tiếng việt": "vi", "welsh": "cy",
    "cymraeg": "cy",
}
# A tag given as one: a 2-3 letter language, then script (Latn), region (DE, 419) and variant subtags.
_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:-[a-z]{4})?(?:-(?:[a-z]{2}|\d{3}))?(?:-(?:[a-z\d]{5,8}|\d[a-z\d]{3}))*")


def language_tag(language: Any) -> str | None:
    """The BCP 47 tag of a `--language` value: "German" -> "de", "de-at" -> "de-AT"; None when unknown (no lang
    attribute is better than a wrong one: it would have a screen reader read the words in a wrong voice)."""
    if not isinstance(language, str):
        return None
    name = " ".join(language.split()).casefold()
    if name in LANGUAGE_TAGS:
        return LANGUAGE_TAGS[name]
    name = name.replace("_", "-")
    if not _LANGUAGE_TAG.fullmatch(name):
        return None
    parts = name.split("-")  # the usual case: language lower, script title, region upper
    return "-".join([parts[0], *(p.title() if len(p) == 4 and p.isalpha() else p.upper() if len(p) == 2 else p
                                 for p in parts[1:])])


def _languages(options: Mapping[str, Any]) -> dict[str, str | None]:
    """The tags of what was said (`speech`: speakers' names), of the transcript's words (`transcript`: the
    translation's language with --translate-to) and of the notes (`notes`: the language their prompts named;
    none when they named none, as results made before `notes_language` did)."""
    plan = options.get("plan") if isinstance(options.get("plan"), Mapping) else {}
    spoken = plan.get("language", options.get("language"))
    target = plan.get("translate_to", options.get("translate_to"))
    speech = language_tag(spoken)
    return {"speech": speech, "transcript": language_tag(target) if target else speech,
            "notes": language_tag(plan.get("notes_language"))}


def _report_date(result: Mapping[str, Any]) -> str | None:
    source = result.get("source") or {}
    value = source.get("created") or result.get("created")
    when: _dt.datetime | None = None
    if value:
        with contextlib.suppress(ValueError, TypeError):
            when = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if when is None:
            return str(value)
    elif source.get("path"):
        with contextlib.suppress(OSError):
            when = _dt.datetime.fromtimestamp(Path(str(source["path"])).stat().st_mtime)
    if when is None:
        return None
    return f"{when.day} {when:%B %Y}"


def _nice_step(duration: float, max_ticks: int = 8) -> float:
    for step in (5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400):
        if duration / step <= max_ticks:
            return step
    return max(duration / max_ticks, 1.0)


def _ticks(total: float) -> list[dict[str, Any]]:
    """The time axis's marks: up to 8 steps for a desktop's width, every other one `minor` (a narrow screen hides
    those: eight labels such as 1:30:00 ran into each other on a phone). The last mark's label ends at its mark, so
    it reaches a whole step further back than a centred one: when the last is an odd one, the one before it is the
    one made minor, so that the narrow screen's labels keep two steps or more apart."""
    step = _nice_step(total)
    last = int(total // step)
    ticks = []
    for n in range(last + 1):
        minor = n % 2 == 1 if n != last else False
        if last % 2 == 1 and n == last - 1:
            minor = True
        ticks.append({"time": n * step, "left": _pct(n * step, total), "minor": minor})
    return ticks


def _contrast_on_white(rgb: tuple[float, ...]) -> float:
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 1.05 / (0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] + 0.05)


def speaker_color(index: int) -> str:
    """The colour of the `index`th speaker (from 0): the palette's, then (a seventeenth speaker on) hues a golden
    angle apart, each as light as it can be while its text keeps 4.5:1 on white. The same index, the same colour."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.381966) % 1.0
    for lightness in range(42, 10, -1):
        rgb = tuple(round(c * 255) for c in colorsys.hls_to_rgb(hue, lightness / 100, 0.55))
        if _contrast_on_white(tuple(c / 255 for c in rgb)) >= 4.5:
            break
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _pct(value: float, total: float) -> float:
    return round(min(max(value / total * 100 if total > 0 else 0.0, 0.0), 100.0), 3)


def _flat_options(options: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested option groups as dotted keys (plan.max_clip), so each value stays short."""
    flat: list[tuple[str, Any]] = []
    for key, value in options.items():
        if isinstance(value, Mapping) and value:
            flat.extend(_flat_options(value, f"{prefix}{key}."))
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


_REFUSED: set[str] = set()  # keyframe paths refused and said so


def _keyframe_file(image: Any, media_dir: Path | None, out_dir: Path) -> str:
    """The keyframe image to embed: only a file inside the work folder (or the output folder). An X.json edited
    or shared by someone else must not pull another file of this machine into a report."""
    if not image:
        return ""
    base = media_dir or out_dir
    path = Path(str(image))
    path = path if path.is_absolute() else base / path
    resolved = path.resolve()
    inside = any(resolved.is_relative_to(Path(b).resolve()) for b in (media_dir, out_dir) if b is not None)
    # A picture in a keyframes folder, as media.py saves them: the work folder an X.json names is the X.json's say.
    if not (inside and resolved.parent.name == "keyframes" and resolved.suffix.lower() in (".jpg", ".jpeg", ".png")):
        if str(image) not in _REFUSED:  # once, not again for each report (HTML, then Markdown) of the same X.json
            _REFUSED.add(str(image))
            logger.warning("not embedding %s: a keyframe must be one of the work folder's keyframes", image)
        return ""
    return str(path)


def _changed_options(options: Mapping[str, Any]) -> list[dict[str, str]]:
    """The options a result was made with that are not this version's defaults, for the footer (X.json keeps
    them all): a reader sees what was chosen, not some sixty settings."""
    from .pipeline import RunOptions

    def as_json(value: Any) -> Any:
        return json.loads(json.dumps(plain(value), default=str))

    defaults = dict(_flat_options(as_json(RunOptions().to_dict())))
    # What the command sets, not the user: `transcribe` summarizes no; one without slides in its outputs, no slides;
    # a rerun with --fresh makes the same result
    made_by_command = {"summarize", "slides", "fresh"}
    return [{"key": key, "value": _compact(value)} for key, value in _flat_options(options)
            if key not in made_by_command and (key not in defaults or defaults[key] != as_json(value))]


def _compact(value: Any) -> str:
    """An option's value for people: yes/no for flags, auto for unset."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return ", ".join(value)  # e.g. the vocabulary
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(plain(value), ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def _side_label(side: Any, result: Mapping[str, Any]) -> str | None:
    """Where a speaker found side by side was heard: "left channel" / "right channel" (a stereo call's), "track N"
    (with --audio-track all), "side N" (otherwise); None for a speaker of a mixed recording."""
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        return None
    if ((result.get("options") or {}).get("audio_track")) == "all":
        return f"track {side}"
    sides = {s.get("side") for s in result.get("speakers") or () if isinstance(s, Mapping)}
    channels = {1: "left channel", 2: "right channel"} if sides <= {1, 2} else {}
    return channels.get(side, f"side {side}")


def _what_is_below(speakers: list[Any], keyframes: list[Any], segments: list[Any], warning: str) -> str:
    """The sentence under 'Meeting notes were not produced': what the report has instead, and whether it is whole
    (all the audio, or the part that decoded). Nothing when nothing was transcribed: nothing below to speak of."""
    if not segments:
        return ""
    shown = [*(["speakers"] if speakers else []), *(["slides"] if keyframes else [])]
    things = ", ".join(shown) + " and " if shown else ""
    if warning:
        return f"The {things}transcript below {'cover' if shown else 'covers'} the audio that decoded."
    return f"The {things}full transcript below {'are' if shown else 'is'} complete."


def _notes_view(result: Mapping[str, Any], speakers: list[dict[str, Any]]) -> dict[str, Any]:
    notes = result.get("notes")
    by_key: dict[str, dict[str, Any]] = {}
    for sp in speakers:
        by_key[sp["id"].casefold()] = sp
        by_key.setdefault(sp["name"].casefold(), sp)
    # `transcribe` asks for no notes: its page is a transcript, with no notice that notes are missing
    asked = (result.get("options") or {}).get("summarize") is not False
    if not isinstance(notes, Mapping):
        reason = "this recording was only transcribed (notes were not requested)"
        return {"produced": False, "status": "skipped", "reason": reason, "asked": asked}
    status = str(notes.get("status") or "ok")
    error = one_line(notes.get("error"))
    if status != "ok":
        reason = error or ("notes were skipped" if status == "skipped" else "the notes step failed without a message")
        return {"produced": False, "status": status, "reason": reason, "asked": asked or status != "skipped"}

    def timed(items: Any) -> list[dict[str, Any]]:
        out = []
        for item in items or ():
            if isinstance(item, str):
                item = {"text": item}
            if isinstance(item, Mapping) and one_line(item.get("text")):
                time = item.get("time")
                out.append({"text": one_line(item["text"]), "time": finite_float(time) if time is not None else None})
        return out

    actions = []
    for item in notes.get("action_items") or ():
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, Mapping) or not one_line(item.get("text")):
            continue
        owner = one_line(item.get("owner"))
        speaker = by_key.get(owner.casefold()) if owner else None
        time = item.get("time")
        actions.append({
            "text": one_line(item["text"]),
            "owner": speaker["name"] if speaker else owner,
            "color": speaker["color"] if speaker else None,
            "due": one_line(item.get("due")),
            "time": finite_float(time) if time is not None else None,
        })
    chapters = [
        {"start": max(finite_float(c.get("start")), 0.0), "title": one_line(c.get("title"))}
        for c in notes.get("chapters") or ()
        if isinstance(c, Mapping) and one_line(c.get("title"))
    ]
    chapters.sort(key=lambda c: c["start"])
    return {
        "produced": True,
        "status": "ok",
        "reason": "",
        "summary": str(notes.get("summary") or "").strip(),
        "decisions": timed(notes.get("decisions")),
        "action_items": actions,
        "chapters": chapters,
        "questions": timed(notes.get("questions")),
    }


def report_context(
    result: Mapping[str, Any], *, out_dir: Path, media_dir: Path | None = None
) -> dict[str, Any]:
    """Everything the report templates show, computed once: names, colours, shares, positions."""
    source = dict(result.get("source") or {})
    name = source_name(result)
    segments = sorted_segments(result)
    total = recording_duration(result) or 1.0

    # Speakers: the listed ones first, then any id that only the segments mention.
    speakers: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    talk: dict[str, float] = {}
    for seg in segments:
        if seg["speaker"] is not None:
            talk[str(seg["speaker"])] = talk.get(str(seg["speaker"]), 0.0) + seg["end"] - seg["start"]
    listed = [s for s in result.get("speakers") or () if isinstance(s, Mapping) and s.get("id") is not None]
    extra = [{"id": sid} for sid in talk if sid not in {str(s["id"]) for s in listed}]
    for index, sp in enumerate([*listed, *extra]):
        sid = str(sp["id"])
        if sid in seen:
            continue
        tt = sp.get("talk_time")
        view = {
            "id": sid,
            "name": one_line(sp.get("name")) or sid,
            "side": _side_label(sp.get("side"), result),
            "talk_time": finite_float(tt) if tt is not None else talk.get(sid, 0.0),
            "color": speaker_color(index),
            "index": index,
            "evidence": [
                {"quote": one_line(e.get("quote")), "time": finite_float(e.get("time"))}
                for e in sp.get("evidence") or ()
                if isinstance(e, Mapping) and one_line(e.get("quote"))
            ],
        }
        seen[sid] = view
        speakers.append(view)
    talk_total = sum(s["talk_time"] for s in speakers) or 1.0
    for sp in speakers:
        share = 100 * sp["talk_time"] / talk_total
        # one who spoke a little did not say nothing: "0.3", not "0"
        sp["share"] = f"{max(share, 0.1):.1f}" if 0 < share < 0.5 else round(share)
    unknown = {"id": "", "name": "", "color": "#8a8f98", "index": -1}

    # Timeline: each speaker's turns as blocks (segments closer than half a second merged).
    rows = []
    for sp in speakers:
        blocks: list[list[float]] = []
        for seg in segments:
            if str(seg["speaker"]) != sp["id"]:
                continue
            if blocks and seg["start"] - blocks[-1][1] <= 0.5:
                blocks[-1][1] = max(blocks[-1][1], seg["end"])
            else:
                blocks.append([seg["start"], seg["end"]])
        if blocks:
            turns = f"{len(blocks)} turn{'' if len(blocks) == 1 else 's'}"
            said = f"{turns}, {human_duration(sp['talk_time'])} of speech"
            summary = f"{sp['name']}: {said}, from {mmss(blocks[0][0])} to {mmss(blocks[-1][1])}"
        else:
            summary = f"{sp['name']}: no speech in the transcript"
        rows.append({
            "speaker": sp,
            "summary": summary,  # what the row shows, for those who cannot see it
            "blocks": [
                {"start": s, "end": e, "left": _pct(s, total), "width": _pct(e - s, total)} for s, e in blocks
            ],
        })
    ticks = _ticks(total)

    # Keyframes, resolved to files for embedding.
    keyframes = []
    for number, kf in enumerate(sorted(result.get("keyframes") or (), key=lambda k: finite_float(k.get("time"))), 1):
        time = finite_float(kf.get("time"))
        end = max(finite_float(kf.get("end"), total), time)
        file = _keyframe_file(kf.get("image_path"), media_dir, out_dir)
        keyframes.append({
            "number": number, "time": time, "end": end, "file": file,
            "width": int(finite_float(kf.get("width"))), "height": int(finite_float(kf.get("height"))),
            "left": _pct(time, total), "span": _pct(end - time, total),
        })

    notes = _notes_view(result, speakers)

    # The transcript, with chapter headings and slide markers at their times.
    events: list[tuple[float, int, dict[str, Any]]] = []
    for chapter in notes.get("chapters") or ():
        # A chapter the model dated a moment into a segment starts with that segment.
        at = chapter["start"]
        for seg in segments:
            if seg["start"] <= at < seg["end"] and at - seg["start"] <= 3.0:
                at = seg["start"]
                break
        events.append((at, 0, {"kind": "chapter", **chapter}))
    for kf in keyframes:
        events.append((kf["time"], 1, {"kind": "slide", **kf}))
    for order, seg in enumerate(segments):
        sp = seen.get(str(seg["speaker"]), unknown) if seg["speaker"] is not None else unknown
        events.append((seg["start"], 2, {"kind": "segment", "order": order, **seg, "who": sp}))
    events.sort(key=lambda e: (e[0], e[1], e[2].get("order", 0)))
    transcript = []
    previous: str | None = None
    for _, _, item in events:
        if item["kind"] == "segment":
            item["new_turn"] = previous != item["who"]["id"]
            previous = item["who"]["id"]
        else:
            previous = None
        transcript.append(item)

    model = dict(result.get("model") or {})
    media = _media_link(result, out_dir)
    timings = [
        {"step": k, "seconds": finite_float(v)}
        for k, v in (result.get("timings") or {}).items()
        if k != "total" and v is not None
    ]
    total_time = (result.get("timings") or {}).get("total")
    title = re.sub(r"(?<=.)\.[A-Za-z0-9]{1,5}$", "", name)  # the name without its extension

    return {
        "title": title or "Recording",
        "source": {
            "name": name,
            "duration": total,
            "sha256": str(source.get("sha256") or ""),
        },
        "warning": one_line(source.get("warning")),  # e.g. the file is cut off (media.audio_shortfall)
        # Under "Meeting notes were not produced": what is below instead ("" when nothing was transcribed).
        "below": _what_is_below(speakers, keyframes, segments, one_line(source.get("warning"))),
        "date": _report_date(result),
        "duration": total,
        "speakers": speakers,
        "timeline": rows,
        "ticks": ticks,
        "keyframes": keyframes,
        "notes": notes,
        "transcript": transcript if segments else [],  # slide markers alone are no transcript
        "segment_count": len(segments),
        "media": media,
        "captions": _captions(result) if media else None,
        "lang": _languages(result.get("options") or {}),
        # Where the model ran, when not in this process: the clips, transcript and slides went there.
        "server": one_line((result.get("options") or {}).get("server")) or None,
        "model": {
            "id": one_line(model.get("id")),
            "transcribe_model": one_line(model.get("transcribe_model")),
            "device": one_line(model.get("device")),
            "dtype": one_line(model.get("dtype")),
        },
        "options": _changed_options(result.get("options") or {}),
        "timings": timings,
        "total_time": finite_float(total_time) if total_time is not None else None,
        "version": __version__,
        "script": Markup(PLAYER_SCRIPT),  # our constant, not recording text
        "script_hash": PLAYER_SCRIPT_HASH,
    }

