"""The video side: a recording's frames streamed from FFmpeg (1 fps), and its keyframes (slide and scene changes)
found among them, each new picture saved once as a JPEG in the work folder (cached there, keyed by the settings and
this module's code)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .errors import MediaError
from .media import OWN_SESSION, Hook, check_input_file, ffmpeg_binary, ffmpeg_input, probe, stderr_tail
from .records import Keyframe, MediaInfo
from .workdir import code_key, settings_key

log = logging.getLogger("mediapipe_g4")


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the recording's start
    image: np.ndarray  # H x W x 3 uint8 RGB


def frame_size(info: MediaInfo, max_size: int) -> tuple[int, int]:
    """Output (width, height) of the first video stream, upright, scaled to fit `max_size`, even."""
    video = next((v for v in info.video_streams if not v.is_cover_art), None)
    if video is None or not video.width or not video.height:
        raise MediaError(f"{info.path} has no video track to take frames from")
    w, h = video.width, video.height
    if video.rotation in (90, 270):  # FFmpeg applies the display rotation while decoding
        w, h = h, w
    scale = min(1.0, max_size / max(w, h))
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


def iter_frames(
    path: str | os.PathLike[str],
    *,
    fps: float = 1.0,
    max_size: int = 640,
    info: MediaInfo | None = None,
) -> Iterator[Frame]:
    """Frames at `fps` (default 1 per second), scaled to fit `max_size`, one at a time.

    Frame k is what was on screen at k / fps seconds (FFmpeg's fps filter picks that frame).
    """
    src = check_input_file(path)
    info = info or probe(src)
    width, height = frame_size(info, max_size)
    stream = next(v for v in info.video_streams if not v.is_cover_art)
    # Frames no other frame refers to are skipped by the decoder where frames come often (5 a second or more on
    # average): at one sample per second a slide change then shows one frame later at most, and decoding gets
    # cheaper. Not in a sparse variable-rate video, where such a frame can be all a slide had (one shown for
    # 200 s was lost); and only where the rate is measured (MP4/MOV count their frames; Matroska and WebM, what
    # browsers record, state a nominal rate).
    measured = info.format_name.startswith("mov,mp4")
    skip = ["-skip_frame", "noref"] if measured and (stream.fps or 0) >= 5 else []
    # The last frame held to the recording's end (a second, when the file does not say how long it is): the fps
    # filter drops a lone last frame at the end of the stream, and a variable-rate video's last slide (one frame,
    # on screen for the last 9 s) was never seen.
    until = ["-t", f"{info.duration:.3f}"] if info.duration > 0 else []
    hold = "stop=-1" if until else "stop_duration=1"
    cmd = [
        ffmpeg_binary(), "-nostdin", "-hide_banner", "-v", "error", *skip, "-i", ffmpeg_input(src),
        "-map", f"0:{stream.index}", "-an", "-sn", "-dn",
        "-vf", f"tpad=stop_mode=clone:{hold},fps={fps}:start_time=0,scale={width}:{height}:flags=area",
        *until, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    frame_bytes = width * height * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            **OWN_SESSION)
    # stderr goes to a spooled file so a chatty FFmpeg can never block on a full pipe
    err = tempfile.TemporaryFile()
    pump = threading.Thread(target=lambda: shutil.copyfileobj(proc.stderr, err), daemon=True)
    pump.start()
    k = 0
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield Frame(time=k / fps, image=np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3))
            k += 1
        proc.wait()
        pump.join()
        if proc.returncode != 0 and k == 0:
            err.seek(0)
            raise MediaError(f"{src}: FFmpeg could not decode the video ({stderr_tail(err.read())})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


# --------------------------------------------------------------------------- keyframes


@dataclass(frozen=True)
class KeyframeOptions:
    thumb_size: tuple[int, int] = (320, 180)  # frames are compared as grayscale thumbnails
    pixel_delta: float = 24 / 255  # a thumbnail pixel "changed" when it moved more than this
    change: float = 0.001  # share of changed still pixels that makes a new slide (one word is ~0.15 %)
    stable: float = 0.001  # ... and under which a frame equals the one before it
    block: int = 10  # thumbnail pixels per side of the blocks in which motion is tracked
    busy: float = 0.2  # a block that changed in more than ~this share of the last ~10 frames ...
    busy_slow: float = 0.1  # ... or of the last ~50 frames is moving video, not a slide
    scene: float = 0.4  # a change of this share of all pixels that keeps moving is a scene cut ...
    settle_seconds: float = 3.0  # ... accepted after this long


def _thumb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    gray = Image.fromarray(image).convert("L").resize(size, Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float32) / 255.0


def _still_pixels(activity: np.ndarray, shape: tuple[int, int], options: KeyframeOptions) -> np.ndarray:
    """Pixels outside busy blocks (and their neighbours): where a change means a new picture."""
    busy = (activity[0] >= options.busy) | (activity[1] >= options.busy_slow)
    grown = busy.copy()  # grow by one block, so a moving tile's quiet edges are not taken for slides
    grown[1:, :] |= busy[:-1, :]
    grown[:-1, :] |= busy[1:, :]
    grown[:, 1:] |= busy[:, :-1]
    grown[:, :-1] |= busy[:, 1:]
    still = np.repeat(np.repeat(~grown, options.block, axis=0), options.block, axis=1)
    return still[: shape[0], : shape[1]]


def _block_changed(moved: np.ndarray, block: int) -> np.ndarray:
    h, w = moved.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((hb * block, wb * block), dtype=bool)
    padded[:h, :w] = moved
    return padded.reshape(hb, block, wb, block).any(axis=(1, 3))


def find_keyframes(
    frames: Iterable[Frame],
    out_dir: str | os.PathLike[str],
    *,
    duration: float | None = None,
    options: KeyframeOptions = KeyframeOptions(),
    hook: Hook | None = None,
) -> list[Keyframe]:
    """Slide and scene changes among the frames, each saved once as a JPEG in `out_dir`.

    Regions that keep moving (a webcam tile, a video) are tracked with a running activity map over
    small blocks and left out, so a change counts where the picture otherwise stands still: a frame becomes a
    keyframe when its still pixels differ from the current keyframe and it then holds still (a slide
    change; a one-word edit counts), or when most of the picture changed and kept moving for
    `settle_seconds` (a scene cut). A slide that stays up for ten minutes is one keyframe; its time
    is the first frame that showed the change, so a change is found within one frame interval.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Keyframe] = []
    current: np.ndarray | None = None  # thumbnail of the current keyframe
    pending: tuple[float, np.ndarray, np.ndarray, float] | None = None  # (time, thumb, image, change)
    prev: np.ndarray | None = None
    activity: np.ndarray | None = None  # per block, fast and slow: running share of frames it changed in
    last_time = 0.0
    total = int(duration) if duration else 0

    def accept(time: float, image: np.ndarray, thumb: np.ndarray, change: float) -> None:
        nonlocal current
        current = thumb
        saved.append(_save_keyframe(out, len(saved), time, image, change))

    for frame in frames:
        thumb = _thumb(frame.image, options.thumb_size)
        last_time = frame.time
        if current is None or prev is None:
            activity = None
            accept(frame.time, frame.image, thumb, 1.0)
        else:
            moved = np.abs(thumb - prev) > options.pixel_delta
            blocks = _block_changed(moved, options.block).astype(np.float32)
            if activity is None:  # the first step shows what moves: count it in full
                activity = np.stack([blocks, blocks * options.busy_slow])
            still_px = _still_pixels(activity, thumb.shape, options)
            differs = np.abs(thumb - current) > options.pixel_delta
            diff = float(np.mean(differs & still_px))
            whole = float(np.mean(differs))
            settled = float(np.mean(moved & still_px)) <= options.stable
            if diff <= options.change and whole < options.scene:
                pending = None  # (back to) the current keyframe: a flicker, not a change
            elif pending is None:
                if settled and diff > options.change:  # a cut between two sampled frames, already still
                    accept(frame.time, frame.image, thumb, diff)
                else:
                    pending = (frame.time, thumb, frame.image.copy(), max(diff, whole))
            elif (settled and diff > options.change) or (
                whole >= options.scene and frame.time - pending[0] >= options.settle_seconds
            ):
                accept(pending[0], frame.image, thumb, max(diff, whole))  # time of the first changed frame
                pending = None
            activity[0] = 0.9 * activity[0] + 0.1 * blocks
            activity[1] = 0.98 * activity[1] + 0.02 * blocks
        prev = thumb
        if hook and total:
            hook("keyframes", min(int(frame.time), total), total)
    if hook and total:  # done (the last frame is a second before the end)
        hook("keyframes", total, total)
    if pending is not None and pending[3] >= options.scene:
        accept(pending[0], pending[2], pending[1], pending[3])
    end = max(duration or 0.0, last_time + 1.0 if saved else 0.0)
    return [
        Keyframe(time=k.time, end=(saved[i + 1].time if i + 1 < len(saved) else end), image_path=k.image_path,
                 width=k.width, height=k.height, change=k.change)
        for i, k in enumerate(saved)
    ]


def _save_keyframe(out: Path, n: int, time: float, image: np.ndarray, change: float) -> Keyframe:
    from PIL import Image

    # The name comes from the keyframe's index and time, never from the media, so it stays in `out`.
    target = out / f"keyframe_{n:04d}_{int(time * 1000):09d}ms.jpg"
    with atomic_path(target) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=82)
    h, w = image.shape[:2]
    return Keyframe(time=time, end=time, image_path=str(target), width=w, height=h, change=round(change, 4))


def extract_keyframes(
    path: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    info: MediaInfo | None = None,
    fps: float = 1.0,
    max_size: int = 640,
    options: KeyframeOptions = KeyframeOptions(),
    hook: Hook | None = None,
    fresh: bool = False,
) -> list[Keyframe]:
    """Keyframes of a recording's video, cached in the work folder (found again with `fresh`, or when they were
    found with other settings or by another version of this code). Empty for audio-only files, and for a video
    FFmpeg cannot decode at all (a warning says so): its sound is still worth a transcript."""
    info = info or probe(path)
    if not info.has_video:
        return []
    folder = Path(work_dir) / "keyframes"
    index = folder / "index.json"
    key = settings_key({"fps": fps, "max_size": max_size, "options": dataclasses.asdict(options),
                        "code": code_key("video")})
    kept = None if fresh else _kept_keyframes(index, key)
    if kept is not None:
        log.info("%s: keyframes from the work folder %s", Path(path).name, work_dir)
        return kept
    if folder.exists():
        shutil.rmtree(folder)  # unfinished, stale or to be redone: its images may not match what we find now
    # closing: an error (or a cancel from the hook) stops FFmpeg now, not when the generator is collected
    with contextlib.closing(iter_frames(path, fps=fps, max_size=max_size, info=info)) as frames:
        try:
            found = find_keyframes(frames, folder, duration=info.duration, options=options, hook=hook)
        except MediaError as exc:  # only the frame reader raises it: not one frame could be decoded
            log.warning("%s; going on without slides", exc)
            return []  # not cached: a later run (another FFmpeg) tries again
    # The images by name: the index holds wherever the work folder is moved (another --cache-dir, a volume)
    write_json(index, {"key": key, "keyframes": [k.to_dict() | {"image_path": Path(k.image_path).name}
                                                 for k in found]})
    return found


def _kept_keyframes(index: Path, key: str) -> list[Keyframe] | None:
    """The keyframes the work folder holds for `key`, or None when they must be found (again): none kept, kept
    with other settings or code, or damaged (an index cut short, an image gone)."""
    try:
        kept = json.loads(index.read_text(encoding="utf-8"))
        if not isinstance(kept, dict) or kept.get("key") != key:
            return None
        found = [Keyframe(**{**k, "image_path": str(index.parent / Path(k["image_path"]).name)})
                 for k in kept["keyframes"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return found if all(Path(k.image_path).is_file() for k in found) else None
