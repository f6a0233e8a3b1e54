"""The FFmpeg front end: find FFmpeg, probe a recording, decode its audio (its frames and keyframes: `video`).

Audio goes from FFmpeg's pipe straight into a file that is memory-mapped, so a 3-hour recording never sits in
memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import fsync, hold, remove_stale_parts
from .errors import FFmpegNotFound, MediaError
from .records import SAMPLE_RATE, AudioStream, MediaInfo, VideoStream, clock

log = logging.getLogger("mediapipe_g4")

Hook = Callable[[str, int, int], None]

_STDERR_TAIL = 400  # characters of FFmpeg's stderr quoted in an error

# The FFmpeg processes that stream audio and frames run in their own session: a terminal's Ctrl-C (or `timeout`'s
# SIGTERM) goes to the whole foreground process group, and an FFmpeg that got it would end its output early, as if
# the file ended there (keyframes up to that point were cached as all of them). g4media stops them itself.
OWN_SESSION = {"start_new_session": True} if os.name == "posix" else {}


# --------------------------------------------------------------------------- binaries


@functools.lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """The system FFmpeg if on PATH (or $G4MEDIA_FFMPEG), else the one imageio-ffmpeg ships."""
    explicit = os.environ.get("G4MEDIA_FFMPEG")
    if explicit:
        where = Path(explicit)
        if where.is_dir():
            raise FFmpegNotFound(f"G4MEDIA_FFMPEG points to {explicit}, a folder; give the ffmpeg program in it")
        if not where.is_file():
            raise FFmpegNotFound(f"G4MEDIA_FFMPEG points to {explicit}, which does not exist")
        if not os.access(where, os.X_OK):
            raise FFmpegNotFound(f"G4MEDIA_FFMPEG points to {explicit}, which is not executable (chmod +x it, or "
                                 "point it at an ffmpeg program)")
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # noqa: BLE001 - any failure means: no bundled binary
        raise FFmpegNotFound(
            "FFmpeg was not found: install it (apt-get install ffmpeg / brew install ffmpeg) "
            f"or `pip install imageio-ffmpeg` ({exc})"
        ) from exc


@functools.lru_cache(maxsize=1)
def ffprobe_binary() -> str | None:
    """ffprobe beside the chosen ffmpeg, or on PATH; None when only a bundled ffmpeg exists."""
    sibling = Path(ffmpeg_binary()).with_name("ffprobe")
    if sibling.is_file():
        return str(sibling)
    return shutil.which("ffprobe")


def ffmpeg_version() -> str:
    """`ffmpeg version 7.1.1-1+b1`; a program that does not answer as FFmpeg does is FFmpegNotFound."""
    binary = ffmpeg_binary()
    try:
        out = subprocess.run([binary, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FFmpegNotFound(f"{binary} does not run ({exc})") from exc
    first = (out.stdout or "").splitlines()[:1]
    if out.returncode != 0 or not first or not first[0].startswith("ffmpeg version"):
        said = " ".join(((out.stderr or "") + (out.stdout or "")).split())[:200] or "nothing"
        raise FFmpegNotFound(f"{binary} is not a working FFmpeg: `-version` ended with status {out.returncode} and "
                             f"said {said!r}")
    return first[0].split(" Copyright")[0]


def ffmpeg_input(path: str | os.PathLike[str]) -> str:
    """A file name as FFmpeg's input: absolute, so that a name like `-notes.wav` is not read as an option, nor
    `rtp:call.wav` as a protocol."""
    return os.path.abspath(path)


def stderr_tail(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines)[-_STDERR_TAIL:] if lines else "no message from FFmpeg"


# --------------------------------------------------------------------------- probe


def check_file_name(text: str) -> str:
    """A recording's name as given (before it becomes a Path, which makes "" of "." and http:/ of http://), or
    a MediaError for an empty one or a URL."""
    if not str(text).strip():
        raise MediaError("an empty file name was given; give a recording file")
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]+://", str(text)):
        raise MediaError(f"{text} is a URL; g4media reads local files only: download the recording first")
    return text


def check_input_file(path: str | os.PathLike[str]) -> Path:
    """A readable, non-empty regular file, or a MediaError that says what is wrong."""
    check_file_name(os.fspath(path))
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise MediaError(f"{p} is a folder; give a recording file (or use `g4media batch` for folders)")
    if not p.is_file():
        # A pipe, /dev/stdin, a socket: g4media reads a recording more than once (probe, audio, frames, its hash)
        raise MediaError(f"{p} is not a regular file (a pipe or a device); g4media reads a recording several "
                         "times: save it to a file first")
    if p.stat().st_size == 0:
        raise MediaError(f"{p} is empty (0 bytes); the recording may not have been saved completely")
    if not os.access(p, os.R_OK):
        raise MediaError(f"{p} cannot be read; check its permissions")
    return p


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Media facts of a recording: duration, streams, codecs, rotation and start offset."""
    p = check_input_file(path)
    probe_bin = ffprobe_binary()
    data = _ffprobe_json(p, probe_bin) if probe_bin else _ffmpeg_probe_json(p)
    return _media_info(p, data)


def _ffprobe_json(path: Path, probe_bin: str) -> dict:
    # Warnings too: "Estimating duration from bitrate" says the duration is a guess (raw AAC, some MP3s).
    cmd = [probe_bin, "-v", "warning", "-print_format", "json", "-show_format", "-show_streams", ffmpeg_input(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{path}: FFmpeg took too long to read the file; it may be damaged") from exc
    if out.returncode != 0:
        raise MediaError(_unreadable(path, out.stderr))
    try:
        data = json.loads(out.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise MediaError(f"{path}: could not read ffprobe's answer ({exc})") from exc
    if _ESTIMATED in out.stderr.decode("utf-8", "replace") and isinstance(data.get("format"), dict):
        data["format"]["duration_estimated"] = True
    return data


_ESTIMATED = "Estimating duration from bitrate"


def _unreadable(path: Path, stderr: bytes | str) -> str:
    """The error for a file FFmpeg cannot read, with what it most likely is where FFmpeg's words say it."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    # An MP4/MOV/M4A whose index, written last, never was (not some other file FFmpeg took for one at a guess)
    if "moov atom not found" in text and "misdetection possible" not in text:
        return (f"{path} is an MP4/MOV recording that was never finished: its index, which the recorder writes "
                "when it stops, is missing (a crash, a full disk, a copy made while it was recording), so FFmpeg "
                "cannot read it; a repair tool such as untrunc can rebuild it from a good file of the same recorder")
    return f"{path} is not a readable media file ({stderr_tail(text)})"


_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?), start: (-?[\d.]+)")
_STREAM_RE = re.compile(r"Stream #\d+:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: (Audio|Video): (\w+)(.*)")
_INPUT_RE = re.compile(r"Input #0, ([^,]+(?:,[^,]+)*?), from")


def _ffmpeg_probe_json(path: Path) -> dict:
    """ffprobe-shaped facts parsed from `ffmpeg -i` (imageio-ffmpeg ships no ffprobe)."""
    try:
        out = subprocess.run(
            [ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", ffmpeg_input(path)],
            capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{path}: FFmpeg took too long to read the file; it may be damaged") from exc
    text = out.stderr.decode("utf-8", "replace")
    if "Input #0" not in text:
        raise MediaError(_unreadable(path, text))
    fmt: dict = {}
    m = _INPUT_RE.search(text)
    if m:
        fmt["format_name"] = m.group(1).strip()
    m = _DURATION_RE.search(text)
    if m:
        h, mi, s, start = m.groups()
        fmt["duration"] = str(int(h) * 3600 + int(mi) * 60 + float(s))
        fmt["start_time"] = start
        fmt["duration_estimated"] = _ESTIMATED in text
    streams = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        sm = _STREAM_RE.search(line)
        if not sm:
            continue
        index, kind, codec, rest = sm.groups()
        st: dict = {"index": int(index), "codec_type": kind.lower(), "codec_name": codec}
        if kind == "Audio":
            rate = re.search(r"(\d+) Hz", rest)
            st["sample_rate"] = rate.group(1) if rate else "0"
            layout = re.search(r"Hz, ([^,]+)", rest)
            st["channel_layout"] = layout.group(1).strip() if layout else None
            st["channels"] = _channels_from_layout(st["channel_layout"])
        else:
            size = re.search(r", (\d{2,5})x(\d{2,5})", rest)
            st["width"], st["height"] = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
            fps = re.search(r"([\d.]+) fps", rest)
            st["avg_frame_rate"] = f"{fps.group(1)}/1" if fps else "0/0"
            st["disposition"] = {"attached_pic": int("attached pic" in rest)}
            for follow in lines[i + 1 : i + 8]:
                rot = re.search(r"rotation of (-?[\d.]+) degrees", follow)
                if rot:
                    st["side_data_list"] = [{"rotation": float(rot.group(1))}]
                    break
                if "Stream #" in follow:
                    break
        streams.append(st)
    return {"format": fmt, "streams": streams}


def _channels_from_layout(layout: str | None) -> int:
    if not layout:
        return 1
    named = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}
    base = layout.split("(")[0].strip()
    if base in named:
        return named[base]
    m = re.match(r"(\d+) channels", base)
    return int(m.group(1)) if m else 1


def _float(value, default: float | None = None) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return default
    return f if np.isfinite(f) else default


def _rate(text: str | None) -> float | None:
    if not text or "/" not in text:
        return _float(text)
    num, den = text.split("/", 1)
    num_f, den_f = _float(num, 0.0), _float(den, 0.0)
    return num_f / den_f if den_f else None


_TOLD_HELD: set[str] = set()


def _wav_stated_seconds(path: Path) -> tuple[float | None, float | None]:
    """(the length a WAV's header states: its data chunk's size, or None: not PCM, or a header a recorder never
    finished (size 0 or the 4 GB placeholder); the length the file holds when that is more than the header states
    and what follows the stated data is no chunk of its own, else None)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            file_size = os.fstat(f.fileno()).st_size
            at, rate_bytes = 12, None
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None, None
            while at + 8 <= len(head):
                chunk, size = head[at:at + 4], int.from_bytes(head[at + 4:at + 8], "little")
                if chunk == b"fmt " and at + 20 <= len(head):
                    rate_bytes = int.from_bytes(head[at + 16:at + 20], "little")  # byte rate
                elif chunk == b"data":
                    if not rate_bytes or size == 0 or size >= 0xFFFFFFF0:
                        return None, None
                    end = at + 8 + size
                    beyond = file_size - end
                    if beyond < max(rate_bytes, 65_536):  # a chunk of tags, a second of audio at most
                        return size / rate_bytes, None
                    f.seek(end + (size & 1))
                    after = f.read(8)
                    is_chunk = (len(after) == 8 and all(32 <= c < 127 for c in after[:4])  # "LIST", "id3 ", ...
                                and end + 8 + int.from_bytes(after[4:], "little") <= file_size + 1)
                    return size / rate_bytes, None if is_chunk else (file_size - at - 8) / rate_bytes
                at += 8 + size + (size & 1)
    except OSError:
        pass
    return None, None


def _tag_duration(stream: dict) -> float | None:
    """A stream's length from its DURATION tag ("00:00:38.115000000"), which Matroska and WebM files carry
    instead of a stream duration; None without one."""
    tags = stream.get("tags") or {}
    value = next((v for k, v in tags.items() if re.fullmatch(r"DURATION(-\w+)?", str(k), re.I)), "")  # DURATION-eng
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(value or "").strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return int(round(float(tag))) % 360 if tag else 0


def _language(tag: str | None) -> str | None:
    return None if not tag or tag.lower() in ("und", "unk", "none") else tag


def _media_info(path: Path, data: dict) -> MediaInfo:
    fmt = data.get("format") or {}
    audio, video = [], []
    for st in data.get("streams") or []:
        kind = st.get("codec_type")
        if kind == "audio":
            audio.append(AudioStream(
                index=int(st.get("index", 0)),
                codec=st.get("codec_name") or "unknown",
                sample_rate=int(_float(st.get("sample_rate"), 0) or 0),
                channels=int(st.get("channels") or 0),
                channel_layout=st.get("channel_layout"),
                duration=_float(st.get("duration")) or _tag_duration(st),
                title=(st.get("tags") or {}).get("title") or None,
                language=_language((st.get("tags") or {}).get("language")),
                start=_float(st.get("start_time")),
            ))
        elif kind == "video":
            video.append(VideoStream(
                index=int(st.get("index", 0)),
                codec=st.get("codec_name") or "unknown",
                width=int(st.get("width") or 0),
                height=int(st.get("height") or 0),
                fps=_rate(st.get("avg_frame_rate")) or _rate(st.get("r_frame_rate")),
                rotation=_rotation(st),
                duration=_float(st.get("duration")),
                is_cover_art=bool((st.get("disposition") or {}).get("attached_pic")),
            ))
    if not audio and not video:
        raise MediaError(f"{path} has neither an audio nor a video track; is it a recording?")
    stream_durations = [s.duration for s in (*audio, *video) if s.duration]
    duration = _float(fmt.get("duration")) or (max(stream_durations) if stream_durations else 0.0)
    held, estimated = None, bool(fmt.get("duration_estimated"))
    if fmt.get("format_name") == "wav" and len(audio) == 1:
        # FFmpeg measures a WAV by its size; its header says how long it was meant to be (a copy cut short).
        stated, held = _wav_stated_seconds(path)
        estimated = estimated and not stated  # a PCM header's length is no guess
        if stated and stated > duration:
            duration = stated
            audio[0] = dataclasses.replace(audio[0], duration=stated)
        if held:  # the header states less than the file holds: FFmpeg would stop where the header says
            if str(path) not in _TOLD_HELD:  # said once: a command probes a file more than once
                _TOLD_HELD.add(str(path))
                log.warning("%s: its header states %s of audio, but the file holds %s (a recorder that stopped "
                            "updating it?): all of it is decoded", path.name, clock(stated or 0.0), clock(held))
            duration = held
            audio[0] = dataclasses.replace(audio[0], duration=held)
    return MediaInfo(
        path=str(path),
        format_name=fmt.get("format_name") or "unknown",
        duration=float(duration or 0.0),
        start_time=float(_float(fmt.get("start_time"), 0.0) or 0.0),
        size_bytes=path.stat().st_size,
        audio_streams=tuple(audio),
        video_streams=tuple(video),
        duration_estimated=estimated,
        indexed_bytes=_indexed_bytes(fmt, data.get("streams") or []),
        wav_held_seconds=held,
    )


def _indexed_bytes(fmt: dict, streams: list[dict]) -> int | None:
    """What an MP4/MOV's index says its media take: the sum of each stream's bit rate x duration, which FFmpeg
    reads from the sample tables (exact, unlike the estimates other formats give). None for other formats, or
    when a stream does not say."""
    if not str(fmt.get("format_name") or "").startswith("mov,mp4"):
        return None
    total = 0.0
    for st in streams:
        rate, seconds = _float(st.get("bit_rate")), _float(st.get("duration"))
        if st.get("codec_type") not in ("audio", "video") or (st.get("disposition") or {}).get("attached_pic"):
            continue
        if not rate or not seconds:
            return None
        total += rate * seconds / 8
    return round(total) or None


def cut_off(info: MediaInfo) -> str | None:
    """Said of a file that holds much less than its own index describes (an MP4 whose index came first, copied or
    downloaded part-way): only its start decodes, which nothing else tells before decoding. None otherwise."""
    if not info.indexed_bytes or info.size_bytes >= 0.9 * info.indexed_bytes:
        return None
    return (f"the file holds {info.size_bytes / 1e6:.1f} MB of the {info.indexed_bytes / 1e6:.1f} MB of media its "
            "index describes: it was cut off (an interrupted copy, download or recording), and only its start "
            "decodes; copy it again if you can")


# --------------------------------------------------------------------------- audio


AUDIO_FILE = "audio.f32"  # raw little-endian float32, 16 kHz mono


AudioTrack = int | str | None  # N (1 = the first audio track), "all" (mixed), or None (the first)


def audio_tracks(info: MediaInfo, track: AudioTrack = None) -> tuple[int, ...]:
    """Positions among `info.audio_streams` (0 = the first) of the track(s) to decode for `track`."""
    count = len(info.audio_streams)
    if track is None or count == 0:
        return (0,)
    if track == "all":
        return tuple(range(count))
    if isinstance(track, int) and 1 <= track <= count:
        return (track - 1,)
    name = Path(info.path).name
    if count == 1:
        raise MediaError(f"{name} has only one audio track, so there is no track {track}; leave out --audio-track")
    raise MediaError(f"{name} has {count} audio tracks ({describe_tracks(info)}); --audio-track takes 1 to {count} "
                     f"or all, not {track}")


def describe_tracks(info: MediaInfo) -> str:
    """`1 "Mic" (eng), 2 "Desktop"`: the audio tracks as --audio-track numbers them."""
    return ", ".join(f"{n}" + (f' "{a.title}"' if a.title else "") + (f" ({a.language})" if a.language else "")
                     for n, a in enumerate(info.audio_streams, 1))


def audio_variant(info: MediaInfo, track: AudioTrack = None) -> str:
    """What sets this audio apart from the first track's, for the work folder's name: "" (the first track),
    "a2" (the second), "amix" (all of them mixed)."""
    picks = audio_tracks(info, track)
    if picks == (0,):
        return ""
    return "amix" if len(picks) > 1 else f"a{picks[0] + 1}"


def decode_audio(
    path: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    info: MediaInfo | None = None,
    hook: Hook | None = None,
    track: AudioTrack = None,
) -> np.ndarray:
    """Decode an audio track (the first; `track` N, or "all" of them mixed) to 16 kHz mono float32, memory-mapped
    from the work folder (whose name says the track: `audio_variant`).

    FFmpeg resamples and downmixes any codec, layout and rate; its output streams into a file that
    is renamed into place only when complete, so a killed run never leaves a short waveform behind
    and a finished one is reused.
    """
    src = check_input_file(path)
    target = Path(work_dir) / AUDIO_FILE
    if target.is_file():
        return _open_waveform(target)
    info = _audio_info(src, info)
    picks = audio_tracks(info, track)
    channels = info.audio_streams[picks[0]].channels if len(picks) == 1 and info.audio_streams else 1
    if channels >= 2:
        # Every channel summed here, not by FFmpeg: its downmix drops the channel it takes for the subwoofer in
        # 3-, 6- and 8-channel files, where a multitrack recorder keeps a microphone; and a mix whose channels
        # cancel out (one inverted) is caught on every run, not only when the sides were decoded too.
        return _decode(src, info, _select(picks, ""), [], hook, (target, float(1 / np.sqrt(channels))),
                       channels=channels)[0]
    # Several tracks are summed (not averaged: a silent track must not halve speech).
    select = _select(picks, f"amix=inputs={len(picks)}:duration=longest:normalize=0")
    return _decode(src, info, select, [target], hook)[0]


CANCELLED = 0.05  # a mix with less than this share of its loudest side's energy: the sides cancel out (-13 dB)

# Start at the container's time zero (pad a late-starting track with silence) and fill gaps, so sample n is always
# at n / 16000 s on the recording's clock, like the frames.
_TIMELINE = f"aresample={SAMPLE_RATE}:async=1:first_pts=0"


def side_count(info: MediaInfo, track: AudioTrack = None) -> int:
    """How many sides of a conversation the audio could hold apart: the tracks when several are taken (`track`
    "all": OBS keeps the mic and the desktop apart), the two channels of one stereo track, else 1."""
    picks = audio_tracks(info, track)
    if len(picks) > 1:
        return len(picks)
    stream = info.audio_streams[picks[0]] if info.audio_streams else None
    return 2 if stream is not None and stream.channels == 2 else 1


def side_file(n: int) -> str:
    return f"audio-side{n}.f32"


def decode_sides(
    path: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    info: MediaInfo | None = None,
    hook: Hook | None = None,
    track: AudioTrack = None,
) -> list[np.ndarray]:
    """Each side of the audio (`side_count`: the tracks taken, or a stereo track's two channels) as its own
    16 kHz mono waveform, memory-mapped from `audio-side{n}.f32` in the work folder, on the recording's clock.
    The mixed waveform (`decode_audio`'s) is written in the same pass when it is not there yet: a stereo track's
    downmix is FFmpeg's, (L + R) / sqrt 2; tracks are summed."""
    src = check_input_file(path)
    info = _audio_info(src, info)
    count, picks = side_count(info, track), audio_tracks(info, track)
    if count < 2:
        channels = info.audio_streams[picks[0]].channels if info.audio_streams else 1
        what = ("one audio channel" if channels <= 1
                else f"{channels} audio channels (surround, not the two sides of a call)")
        hint = " (its tracks are sides with --audio-track all)" if len(info.audio_streams) > 1 else ""
        raise MediaError(f"{src.name} has {what}, so there are no sides to tell apart; leave out --split-channels"
                         f"{hint}")
    targets = [Path(work_dir) / side_file(n) for n in range(1, count + 1)]
    if all(t.is_file() for t in targets):
        return [_open_waveform(t) for t in targets]
    mixed = Path(work_dir) / AUDIO_FILE
    mix = None if mixed.is_file() else (mixed, 1.0 if len(picks) > 1 else float(np.sqrt(0.5)))
    # Several tracks side by side (as the channels of one stream), each padded to where the last one ends (amerge
    # stops with the shortest: padded to the longest track's length, one that starts late was cut off there).
    longest = max((info.audio_end(p) or info.duration or 0.0) for p in picks) if len(picks) > 1 else 0
    select = _select(picks, f"amerge=inputs={len(picks)}", f",apad=whole_dur={longest:.3f}")
    return _decode(src, info, select, targets, hook, mix, "track" if len(picks) > 1 else "channel")


def _select(picks: tuple[int, ...], join: str, each: str = "") -> list[str]:
    """FFmpeg's stream mapping for the audio tracks `picks`, on the recording's clock: one track as it is; several
    each made mono (then `each`, more filters) and made one stream by `join` (a filter taking them all)."""
    if len(picks) == 1:
        return ["-map", f"0:a:{picks[0]}", "-af", _TIMELINE]
    chains = [f"[0:a:{p}]{_TIMELINE},aformat=channel_layouts=mono{each}[a{p}]" for p in picks]
    inputs = "".join(f"[a{p}]" for p in picks)
    return ["-filter_complex", ";".join([*chains, f"{inputs}{join}[out]"]), "-map", "[out]"]


def _audio_info(src: Path, info: MediaInfo | None) -> MediaInfo:
    info = info or probe(src)
    if not info.has_audio:
        raise MediaError(
            f"{src} has no audio track, and this command needs speech; "
            "use `g4media probe` to see its streams"
        )
    return info


def _decode(src: Path, info: MediaInfo, select: list[str], targets: list[Path], hook: Hook | None,
            mix: tuple[Path, float] | None = None, unit: str = "channel", channels: int = 0) -> list[np.ndarray]:
    """Run FFmpeg with `select` (its stream mapping and filters) to 16 kHz float32 with one channel per target,
    each channel streamed into its own file (and with `mix`, (path, weight), their sum times the weight into
    another), renamed into place only when all are complete. A mix far quieter than its loudest `unit` (a
    channel or track) means they cancel out (one is the other inverted, as a miswired microphone makes it): the
    mix is then that loudest one alone, and the user is told. With no targets, `channels` are decoded for the
    mix alone (its waveform is returned)."""
    channels = channels or len(targets)
    folder = (targets[0] if targets else mix[0]).parent  # type: ignore[index]
    folder.mkdir(parents=True, exist_ok=True)
    finals = [*targets, *([mix[0]] if mix else [])]
    remove_stale_parts(folder)  # what a run killed while decoding left: 64 KB per second of recording each
    parts = [t.with_name(f".{t.name}.{os.getpid()}.part") for t in finals]
    cmd = [
        ffmpeg_binary(), "-nostdin", "-hide_banner", "-v", "error", *info.decode_options, "-i", ffmpeg_input(src),
        *select,
        "-vn", "-sn", "-dn", "-ac", str(channels), "-ar", str(SAMPLE_RATE), "-f", "f32le", "-acodec", "pcm_f32le",
        "pipe:1",
    ]
    total = max(1, int(info.duration))
    frame = 4 * channels
    written = 0
    energy = np.zeros(channels + 1)  # of each channel, and of the mix
    try:
        with contextlib.ExitStack() as stack:
            outs = [stack.enter_context(open(p, "wb")) for p in parts]
            for out in outs:
                hold(out.fileno())  # being written: no other run's sweep takes it (another container's, say)
            proc = stack.enter_context(subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **OWN_SESSION))
            stack.callback(lambda: proc.poll() is None and proc.kill())  # interrupted: it did not hear the signal
            stderr_chunks: list[bytes] = []
            reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
            reader.start()
            assert proc.stdout is not None
            pending = b""
            while chunk := proc.stdout.read(1 << 20):
                pending += chunk
                whole = len(pending) // frame * frame
                if channels == 1:
                    outs[0].write(pending[:whole])
                else:  # interleaved samples: each channel to its own file
                    samples = np.frombuffer(pending[:whole], dtype="<f4").reshape(-1, channels)
                    for c in range(len(targets)):
                        outs[c].write(np.ascontiguousarray(samples[:, c]).tobytes())
                    if mix:
                        mixed = samples.sum(axis=1, dtype=np.float32) * np.float32(mix[1])
                        outs[-1].write(mixed.tobytes())
                        energy += [*np.einsum("ij,ij->j", samples, samples, dtype=np.float64),
                                   float(np.dot(mixed, mixed))]
                pending = pending[whole:]
                written += whole // channels
                if hook:
                    hook("decode", min(total, written // (4 * SAMPLE_RATE)), total)
            proc.wait()
            reader.join()
        if proc.returncode != 0:
            raise MediaError(f"{src}: FFmpeg could not decode the audio ({stderr_tail(b''.join(stderr_chunks))})")
        if written < 4:
            raise MediaError(f"{src}: the audio track holds no samples; the file may be truncated")
        if hook:  # done: the last second counted down may be short of the stated duration
            hook("decode", total, total)
        loudest = int(np.argmax(energy[:channels]))
        if mix and energy[-1] < CANCELLED * energy[loudest]:
            log.warning("%s: its %ss cancel each other out when mixed (one is the other inverted, as a miswired "
                        "microphone makes it); using %s %d alone", src.name, unit, unit, loudest + 1)
            if not targets:  # its channels were not kept: that one decoded again
                return _decode(src, info, [*select[:-1], f"{select[-1]},pan=mono|c0=c{loudest}"], [mix[0]], hook)
            shutil.copyfile(parts[loudest], parts[-1])
        for part, target in zip(parts, finals, strict=True):
            fsync(part)  # on disk before the name says it is whole: a power cut leaves no short waveform
            os.replace(part, target)
    finally:
        for part in parts:
            if part.exists():
                part.unlink()
    log.info("decoded %s: %.2f s of audio%s", src.name, written / 4 / SAMPLE_RATE,
             f" in {channels} sides" if len(targets) > 1 else "")
    return [_open_waveform(t) for t in targets or finals]


def release_audio(work_dir: str | os.PathLike[str], *, sides_only: bool = False) -> None:
    """Remove the decoded audio from a work folder, or only its sides (a waveform already mapped stays readable
    where the system allows; where it does not, e.g. on Windows while mapped, the file stays)."""
    for path in [*([] if sides_only else [Path(work_dir) / AUDIO_FILE]), *Path(work_dir).glob(side_file("*"))]:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _open_waveform(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size < 4:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r", shape=(size // 4,))


def audio_shortfall(info: MediaInfo, decoded_seconds: float, track: AudioTrack = None) -> str | None:
    """What to tell the user when less audio decoded than the file states (a recording cut off by a crash, a
    full disk or an unfinished copy: FFmpeg decodes up to the damage and exits 0), or None. The transcript
    then covers only the part that decoded, which a reader of the report has to know."""
    picks = audio_tracks(info, track) if info.audio_streams else ()
    stated = max((d for p in picks if (d := info.audio_end(p))), default=None)
    if stated is None and len(picks) == len(info.audio_streams):
        stated = info.duration  # the file's length stands for its audio's
    # (Without its own length, a track taken from several may just be shorter than the file: nothing to say.)
    # A duration FFmpeg estimated from the bitrate (raw AAC, a VBR MP3 without a header) says nothing: it was
    # found 40 % to 13 times the length that decodes, of whole files.
    if not stated or info.duration_estimated or decoded_seconds >= stated - max(1.0, 0.02 * stated):
        return None
    return (f"only the first {clock(decoded_seconds)} of the {clock(stated)} of audio the file states could be "
            "decoded; the file may be incomplete, and the transcript covers only that part")


def warn_if_cut_off(name: str, info: MediaInfo, waveform: np.ndarray, track: AudioTrack = None) -> str | None:
    """`audio_shortfall` of a decoded waveform, said as a warning (every command that decodes says it), or None."""
    short = audio_shortfall(info, len(waveform) / SAMPLE_RATE, track)
    if short:
        log.warning("%s: %s", name, short)
    return short
