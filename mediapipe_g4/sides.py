"""Recordings whose channels (or tracks) are the sides of a conversation.

A call recorder puts the caller on one channel and the callee on the other; two microphones on a stereo
interface give each voice its own channel (the other voice bleeds in, much quieter); OBS keeps the mic and the
desktop on two tracks. There, each side's speech is found where that side is the loud one, and diarized on its
own: voices on two sides are never taken for one, and both are heard when they talk at once. A room recorded
in stereo hears every voice about equally on both channels, and mono copied to two channels is the same on
both: those are mixed and diarized as one waveform, as any other recording.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np

from .diarize import DiarizationOptions, diarize
from .errors import G4Error
from .records import SAMPLE_RATE, Diarization, SpeakerTurn, SpeechRegion
from .vad import detect_speech, iter_blocks

log = logging.getLogger("mediapipe_g4")

Hook = Callable[[str, int, int], None]

FRAME = SAMPLE_RATE // 20  # 50 ms level frames
LEAD_DB = 10.0  # a side leads a frame when it is this much louder than every other side
LED = 0.6  # sides: this much of the sound is led by one side ...
EACH_LEADS = 0.05  # ... and each side leads at least this much of it
OWN_DB = 10.0  # a side speaks in a frame only when it is within this of the loudest (else it hears another side)
FLOOR_DB = 6.0  # ... and this much above its own noise floor
SMOOTH_FRAMES = 5  # levels are compared over this many frames (a quarter second)
SILENCE_DB = -55.0  # frames quieter than this on every side are no one's
MIN_ACTIVE = 40  # frames (2 s) of sound before the sides are judged
MIN_PIECE = 0.2  # seconds: shorter pieces of a side's own speech are dropped
JOIN_GAP = 0.3  # seconds: a side's own speech continues over shorter dips
SHARED = 0.5  # two speakers on two sides talking at once this much of the quieter one's time are one voice
MAX_BOOST_DB = 30.0  # a quieter side is raised at most this much to match the loudest (`balanced`)


def side_levels(sides: Sequence[np.ndarray]) -> np.ndarray:
    """(frames, sides): the level in dBFS of each 50 ms frame of each side, read block by block (a frame's
    own mean taken out: a DC offset is no sound; 10x faster than the VAD's filter)."""
    length = min(len(s) for s in sides)
    frames = length // FRAME
    out = np.full((frames, len(sides)), -120.0, dtype=np.float32)
    block = FRAME * 2400  # two minutes
    for c, side in enumerate(sides):
        for start, samples in iter_blocks(side[: frames * FRAME], block, dc_block=False):
            n = len(samples) // FRAME
            x = samples[: n * FRAME].reshape(n, FRAME).astype(np.float64)
            power = np.maximum(np.einsum("ij,ij->i", x, x) / FRAME - np.square(x.mean(axis=1)), 0.0)
            out[start // FRAME : start // FRAME + n, c] = 10 * np.log10(power + 1e-12)
    return out


def _active(levels: np.ndarray) -> np.ndarray:
    """Frames with sound on some side: above silence and within 30 dB of that side's own loud frames (a call's
    far side is often much quieter than the near one)."""
    if len(levels) == 0:
        return np.zeros(0, dtype=bool)
    floors = np.maximum(SILENCE_DB, np.percentile(levels, 95, axis=0) - 30.0)
    return (levels > floors).any(axis=1)


def balanced(levels: np.ndarray) -> np.ndarray:
    """Levels with each side's gain evened out: a side recorded quieter (a call's far side 10 dB down, a mic
    turned low) raised until its loudest speech (99th percentile of the frames with sound) matches the loudest
    side's, at most 30 dB; a silent side left as it is. A side's bleed of the other is then judged against that
    side's own voice, not against a level the recording set."""
    active = _active(levels)
    if levels.shape[1] < 2 or active.sum() < MIN_ACTIVE:
        return levels
    peaks = np.percentile(levels[active], 99, axis=0)
    heard = peaks > SILENCE_DB
    if not heard.any():
        return levels
    boost = np.where(heard, np.clip(peaks[heard].max() - peaks, 0.0, MAX_BOOST_DB), 0.0)
    return (levels + boost[None, :]).astype(np.float32)


def _lead(levels: np.ndarray) -> np.ndarray:
    """(frames, sides): how many dB each side is above the loudest other side."""
    others = np.stack([np.delete(levels, c, axis=1).max(axis=1) for c in range(levels.shape[1])], axis=1)
    return levels - others


def separate_sides(levels: np.ndarray) -> bool:
    """Whether each side carries its own voices: most sound is led by one side (10 dB above the others) and
    every side leads some of it. False for a room in stereo, mono on two channels, or a side that stays silent."""
    active = _active(levels)
    if levels.shape[1] < 2 or active.sum() < MIN_ACTIVE:
        return False
    leads = (_lead(levels[active]) >= LEAD_DB).mean(axis=0)
    log.info("sides: each leads %s of the sound", ", ".join(f"{x:.0%}" for x in leads))
    return bool(leads.sum() >= LED and leads.min() >= EACH_LEADS)


def _smooth(levels: np.ndarray, frames: int = SMOOTH_FRAMES) -> np.ndarray:
    """Levels averaged (as power) over `frames` frames around each, so a soft syllable counts with its word."""
    power = np.power(10.0, levels.astype(np.float64) / 10)
    kernel = np.ones(frames) / frames
    smooth = np.stack([np.convolve(power[:, c], kernel, mode="same") for c in range(levels.shape[1])], axis=1)
    return (10 * np.log10(smooth + 1e-12)).astype(np.float32)


def own_speech(regions: Sequence[SpeechRegion], levels: np.ndarray, side: int) -> tuple[SpeechRegion, ...]:
    """The parts of one side's speech regions where that side is not just hearing another: its level (over a
    quarter second) within 10 dB of the loudest side's and 6 dB above its own noise floor; joined over dips
    shorter than 0.3 s, pieces shorter than 0.2 s dropped."""
    smooth = _smooth(levels)
    floor = float(np.percentile(smooth[:, side], 10)) if len(smooth) else SILENCE_DB
    own = _active(levels) & (_lead(smooth)[:, side] > -OWN_DB) & (smooth[:, side] > floor + FLOOR_DB)
    per_second = SAMPLE_RATE / FRAME
    join = round(JOIN_GAP * per_second)
    out: list[SpeechRegion] = []
    for region in regions:
        lo, hi = int(region.start * per_second), min(len(own), int(np.ceil(region.end * per_second)))
        mask = own[lo:hi].copy()
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            continue
        gaps = np.flatnonzero(np.diff(idx) > 1)
        for a, b in zip(idx[gaps], idx[gaps + 1], strict=True):
            if b - a - 1 <= join:
                mask[a:b] = True
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
        for first, last in zip(edges[::2], edges[1::2], strict=True):
            start = max(region.start, (lo + first) / per_second)
            end = min(region.end, (lo + last) / per_second)
            if end - start >= MIN_PIECE:
                out.append(SpeechRegion(round(float(start), 3), round(float(end), 3)))
    return tuple(out)


def side_options(options: DiarizationOptions, sides: int) -> DiarizationOptions:
    """Each side's own count: up to the total less one for each other side (`--speakers N` over two sides:
    each side finds between 1 and N - 1; N = 2 gives one each)."""
    if options.num_speakers is not None and options.num_speakers < sides:
        raise G4Error(f"--speakers {options.num_speakers} is fewer than the recording's {sides} sides, each with its "
                      "own voices; give at least that many, or --no-split-channels")
    most = (options.num_speakers or options.max_speakers) - (sides - 1)
    return dataclasses.replace(options, num_speakers=1 if most <= 1 else None, min_speakers=1,
                               max_speakers=max(1, most))


def diarize_sides(sides: Sequence[np.ndarray], options: DiarizationOptions, levels: np.ndarray | None = None,
                  hook: Hook | None = None) -> Diarization:
    """Speaker turns of a recording with one side of the conversation per waveform: each side's own speech
    diarized on its own, the turns merged in time order (those of two sides may overlap) and the speakers named
    S1, S2, ... in order of first appearance; `Diarization.sides` says whose side each is on."""
    levels = balanced(side_levels(sides)) if levels is None else levels
    per_side = side_options(options, len(sides))
    turns: list[tuple[float, float, int, str]] = []
    for c, side in enumerate(sides):
        regions = own_speech(detect_speech(side, options.vad, hook=hook), levels, c)
        found = diarize(side, options=per_side, regions=regions, hook=hook) if regions else None
        turns.extend((t.start, t.end, c, t.speaker) for t in (found.turns if found else ()))
    names: dict[tuple[int, str], str] = {}
    merged = []
    for start, end, c, spk in sorted(turns):
        name = names.setdefault((c, spk), f"S{len(names) + 1}")
        merged.append(SpeakerTurn(start, end, name))
    duration = max(len(s) for s in sides) / SAMPLE_RATE
    log.info("diarization by sides: %d speakers on %d sides, %d turns", len(names), len(sides), len(merged))
    return Diarization(duration=duration, speakers=tuple(names.values()), turns=tuple(merged),
                       sides={name: c + 1 for (c, _), name in names.items()})


def find_speakers(waveform: np.ndarray, options: DiarizationOptions,
                  open_sides: Callable[[], Sequence[np.ndarray]] | None = None,
                  hook: Hook | None = None) -> Diarization:
    """Speaker turns of a recording: side by side (`diarize_sides`) when `open_sides` gives its sides
    (`media.decode_sides`) and they carry their own voices, or always with `options.sides` "split"; else of the
    mixed `waveform`. One speaker (`--speakers 1`) or `options.sides` "mix" never opens the sides."""
    if open_sides is not None and options.sides != "mix" and (options.num_speakers != 1 or options.sides == "split"):
        sides = open_sides()
        levels = balanced(side_levels(sides))
        if options.sides == "split":
            found = diarize_sides(sides, options, levels, hook)
            if shared := shared_voices(found):
                log.warning("%s speak at the same times on two channels: one voice heard on both, so these "
                            "channels do not hold a side each; leave out --split-channels",
                            ", ".join(f"{a} and {b}" for a, b in shared))
            return _side_by_side(found, options)
        if separate_sides(levels):
            found = diarize_sides(sides, options, levels, hook)
            shared = shared_voices(found)
            if not shared:
                return _side_by_side(found, options)
            log.info("sides: %s speak at the same times on two sides, so they are one voice heard on both: "
                     "diarizing the mix", ", ".join(f"{a} and {b}" for a, b in shared))
    return diarize(waveform, options=options, hook=hook)


def _side_by_side(found: Diarization, options: DiarizationOptions) -> Diarization:
    """The turns found side by side, as they stand; a --speakers total they do not make is said (each side counts
    its own speakers). Said only here: a split given up for the mix (one voice on both sides) makes it exactly."""
    if options.num_speakers is not None and len(found.speakers) != options.num_speakers:
        log.warning("--speakers %d: found %d side by side (each side's count is its own: the total cannot be set); "
                    "--no-split-channels finds exactly %d in the mix", options.num_speakers, len(found.speakers),
                    options.num_speakers)
    return found


def shared_voices(found: Diarization) -> list[tuple[str, str]]:
    """Pairs of speakers on two sides who speak at the same times for most of the quieter one's talk: one voice
    heard on both sides (two microphones in a room, someone between them), which two people on a call never
    are; their talking at once stays short (interruptions, "mm-hm")."""
    talk: dict[str, list[tuple[float, float]]] = {}
    for t in found.turns:
        talk.setdefault(t.speaker, []).append((t.start, t.end))
    pairs = []
    for a in found.speakers:
        for b in found.speakers:
            if a >= b or found.sides.get(a) == found.sides.get(b):
                continue
            both = sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in talk.get(a, ()) for s2, e2 in talk.get(b, ()))
            least = min(sum(e - s for s, e in talk.get(a, ())), sum(e - s for s, e in talk.get(b, ())))
            if least > 0 and both >= SHARED * least:
                pairs.append((a, b))
    return pairs
