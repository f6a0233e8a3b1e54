"""Who spoke when: speaker turns from voice embeddings clustered over the whole recording.

Steps, each streamed so memory does not grow with the recording's length:

1. Speech regions with Silero VAD (`vad.detect_speech`).
2. Inside every region, sliding windows (default 1.6 s, hop 0.4 s; a shorter region is one window)
   get a Resemblyzer (GE2E) voice embedding. The mel spectrogram is computed once per region, and
   windows go through the encoder in batches, in parallel single-threaded workers.
3. The speaker count and clusters, over the whole recording: for k = 2, 3, ... k-means (fixed
   seeds) on the full-length windows proposes k voices; a cluster of windows that straddle a
   change between two other speakers, or one too small to be a voice, is folded into its nearest
   voice; the proposal stands while the voices stay put inside speech regions and no two centroids
   are nearly the same voice (voices whose centroids are all clearly apart may switch more often:
   one voice split by its content keeps nearly one centroid, and quick exchanges without a pause
   are people, not content), and the search stops after two k in a row fail. (Spectral clustering
   with an eigengap was tried first and over-counted: overlapping windows make every turn its own
   tight group.) Nothing is N x N, so memory stays small for hours of speech.
4. Every window (short ones, e.g. backchannels, included) is scored against the speaker centroids;
   each 20 ms frame takes the speaker with the best average score of the windows covering it, so a
   change without a pause is found inside a region. Frames become turns; a same-speaker turn
   continues over short pauses; a sliver inside a region goes to its neighbours.
5. A region that a pause too short for the VAD parts (0.1 s, 25 dB down) has pieces; a piece of at most a
   window (a reply of a word or two between someone else's sentences, which every sliding window mostly
   misses) gets its own embedding and goes to the speaker it is clearly closest to.

Speakers are named S1, S2, ... in order of first appearance. Same input, same turns: all steps are
deterministic (fixed k-means seeds, no sampling).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import G4Error
from .records import SAMPLE_RATE, Diarization, SpeakerTurn, SpeechRegion
from .vad import (
    VadOptions,
    check_waveform,
    detect_speech,
    release_pages,
    torch_threads,
    usable_cpus,
)

log = logging.getLogger("mediapipe_g4")

Hook = Callable[[str, int, int], None]

MEL_HOP = 160  # Resemblyzer's mel frames: 10 ms hop, 25 ms window, 40 bands
MEL_WINDOW = 400
MEL_BANDS = 40
FRAME_RATE = SAMPLE_RATE // MEL_HOP  # mel frames per second
VOTE_STEP = 2  # mel frames per voting frame (20 ms)


@dataclass(frozen=True)
class DiarizationOptions:
    """How turns are found. Echoed into outputs, so a result says how it was made."""

    num_speakers: int | None = None  # known speaker count, or None to find it
    min_speakers: int = 1
    max_speakers: int = 8
    window: float = 1.6  # seconds of speech per embedding (Resemblyzer's own partial length)
    hop: float = 0.4  # seconds between windows
    min_window: float = 0.25  # regions shorter than this get no embedding of their own
    min_cluster_windows: int = 6  # a voice needs this many full windows (about 3.6 s of speech)
    max_switch_rate: float = 0.06  # k voices are rejected if labels flip more often inside regions
    max_centroid_similarity: float = 0.905  # ... or if two voices' centroids are closer than this,
    separable_windows: int = 40  # ... unless both have this many windows (about 16 s of speech) and their windows
    min_separation: float = 8.0  # ... fall in two modes along the line between the centroids (Fisher ratio)
    distinct_similarity: float = 0.85  # voices whose centroids are all at most this close are distinct people:
    distinct_switch_rate: float = 0.12  # ... their labels may flip this often (quick exchanges without pauses)
    patience: int = 1  # the count search goes on past this many implausible k (k-means may split the wrong voice)
    max_fit: int = 4000  # k-means fits on at most this many windows (evenly spaced), then assigns all
    min_gap: float = 0.6  # a same-speaker turn continues over pauses shorter than this
    min_turn_in_region: float = 0.5  # shorter runs inside one speech region join their neighbours
    piece_pause: float = 0.1  # a quiet stretch this long inside a region parts it into pieces ...
    piece_quiet_db: float = 25.0  # ... quiet meaning this many dB under the region's loud speech
    piece_margin: float = 0.06  # a piece up to `window` long whose own voice is clearly another speaker's is theirs
    batch_size: int = 128  # windows per encoder call
    sides: str = "auto"  # a recording whose channels (tracks) hold the sides of a call: "split" diarizes each side
    # on its own, "mix" the mixed waveform, "auto" splits when each side carries its own voices (sides.py)
    vad: VadOptions = field(default_factory=VadOptions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- embeddings


_ENCODER_LOCK = threading.Lock()


class _Encoder:
    """Resemblyzer's GE2E voice encoder (its weights ship inside the package) and its mel front end."""

    def __init__(self) -> None:
        import torch

        try:
            # One thread at a time: the warning filters are the process's (batch diarizes in several threads; a
            # redirect of stdout here once left another thread's output in a buffer no one read).
            with _ENCODER_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # webrtcvad's pkg_resources notice
                from resemblyzer import VoiceEncoder

                self.net = VoiceEncoder(device="cpu", verbose=False).eval()
        except ImportError as exc:
            raise G4Error(
                f"the Resemblyzer voice encoder cannot be imported ({exc}); install it with "
                "`pip install resemblyzer 'setuptools<81'` (its webrtcvad needs pkg_resources)"
            ) from exc
        import librosa

        self.mel_basis = torch.from_numpy(
            librosa.filters.mel(sr=SAMPLE_RATE, n_fft=MEL_WINDOW, n_mels=MEL_BANDS).astype(np.float32)
        )
        self.window = torch.hann_window(MEL_WINDOW, periodic=True)

    def mel(self, wav: np.ndarray) -> np.ndarray:
        """Power mel spectrogram (frames, 40), as resemblyzer.audio.wav_to_mel_spectrogram computes it."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        with torch.inference_mode():
            spec = torch.stft(
                x, MEL_WINDOW, MEL_HOP, window=self.window, center=True, pad_mode="constant", return_complex=True
            )
            power = spec.real**2 + spec.imag**2
            return (self.mel_basis @ power).T.contiguous().numpy()

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) -> (batch, 256) L2-normalized embeddings."""
        import torch

        with torch.inference_mode():
            return self.net(torch.from_numpy(mels)).numpy()


@functools.lru_cache(maxsize=1)
def _encoder() -> _Encoder:
    return _Encoder()


@dataclass
class _Windows:
    """The embedded windows of a recording, in time order (arrays grow by batch)."""

    start: np.ndarray  # mel frame index in the recording (10 ms)
    end: np.ndarray
    region: np.ndarray  # index into the speech regions
    full: np.ndarray  # bool: a full-length window (used for clustering)
    emb: np.ndarray  # (n, 256) float32


def _rms(wav: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0


def _normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Scale to Resemblyzer's training level (-30 dBFS); its mel input is not log-compressed."""
    rms = _rms(wav)
    if rms < 1e-6:
        return wav
    return (wav * (10 ** (target_dbfs / 20) / rms)).astype(np.float32)


def _window_level(mel: np.ndarray, wav: np.ndarray, target_dbfs: float = -30.0,
                  max_gain_db: float = 30.0) -> np.ndarray:
    """A window's (power) mel spectrogram as if its own samples were at -30 dBFS (at most `max_gain_db` up).

    The region is brought to that level as a whole, but a region often holds two people without a pause
    between them: a voice 15 dB quieter than the other one there came out 15 dB under the level it has alone,
    and Resemblyzer's embedding moves with the level (its mel input is not log-compressed), so the quiet
    voice's windows in shared regions formed a speaker of their own."""
    rms = _rms(wav)
    if rms < 1e-6:
        return mel.copy()
    gain = min(10 ** (max_gain_db / 10), (10 ** (target_dbfs / 20) / rms) ** 2)  # mel is power: amplitude squared
    return (mel * np.float32(gain)).astype(np.float32)


def _pieces(waveform: np.ndarray, regions: tuple[SpeechRegion, ...], options: DiarizationOptions
            ) -> tuple[tuple[int, SpeechRegion], ...]:
    """(region index, piece) for the short pieces of speech regions that pauses part: a quiet stretch of at least
    `piece_pause` seconds, `piece_quiet_db` under the region's loud speech (its 95th percentile), too short for the
    VAD to end the region. A reply of a word or two between someone else's sentences is such a piece; the
    sliding windows, each mostly the other voice, never see it alone. Pieces from `min_window` to `window`
    seconds long."""
    pause = max(1, round(options.piece_pause * FRAME_RATE))  # in 10 ms level frames, as the mel's
    out: list[tuple[int, SpeechRegion]] = []
    for ri, wav in _iter_region_audio(waveform, regions):
        n = len(wav) // MEL_HOP
        if n < 2 * pause:
            continue
        power = np.mean(np.square(wav[: n * MEL_HOP].reshape(n, MEL_HOP), dtype=np.float64), axis=1)
        db = 10 * np.log10(power + 1e-12)
        quiet = db < np.percentile(db, 95) - options.piece_quiet_db
        edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
        gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= pause and a > 0 and b < n]
        if not gaps:
            continue
        bounds = [0, *[x for gap in gaps for x in gap], n]
        for a, b in zip(bounds[::2], bounds[1::2]):
            if options.min_window * FRAME_RATE <= b - a <= options.window * FRAME_RATE:
                start = regions[ri].start + a / FRAME_RATE
                out.append((ri, SpeechRegion(start=start, end=start + (b - a) / FRAME_RATE)))
    return tuple(out)


def _window_starts(n_frames: int, win: int, hop: int) -> list[int]:
    if n_frames <= win:
        return [0]
    starts = list(range(0, n_frames - win + 1, hop))
    if starts[-1] != n_frames - win:
        starts.append(n_frames - win)  # the last window ends with the region
    return starts


def _iter_region_audio(waveform: np.ndarray, regions: tuple[SpeechRegion, ...]) -> Iterator[tuple[int, np.ndarray]]:
    """(region index, DC-free float32 samples) for each region, read from the (memory-mapped) waveform."""
    for i, r in enumerate(regions):
        a, b = round(r.start * SAMPLE_RATE), round(r.end * SAMPLE_RATE)
        wav = np.array(waveform[a:b], dtype=np.float32)
        release_pages(waveform, a, b)
        if not np.all(np.isfinite(wav)):
            wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
        yield i, wav - np.float32(wav.mean()) if len(wav) else wav


def embed_windows(
    waveform: np.ndarray, regions: tuple[SpeechRegion, ...], options: DiarizationOptions, hook: Hook | None = None
) -> _Windows:
    """Resemblyzer embeddings of sliding windows inside the speech regions, in time order.

    The encoder's LSTM runs single-threaded in several worker threads, one batch each: an LSTM is
    a long chain of small steps, and a multi-threaded one stalls at every step whenever another
    process holds a core. Results do not depend on the number of workers.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    enc = _encoder()
    win = round(options.window * FRAME_RATE)
    hop = max(1, round(options.hop * FRAME_RATE))
    min_frames = round(options.min_window * FRAME_RATE)
    starts: list[int] = []
    ends: list[int] = []
    region_ids: list[int] = []
    full: list[bool] = []
    pending: dict[int, list[tuple[int, np.ndarray]]] = {}  # window length -> [(window index, mel)]
    n_pending = 0
    running: list[tuple[list[int], Future]] = []
    out: dict[int, np.ndarray] = {}
    workers = usable_cpus()

    def collect(limit: int) -> None:
        while len(running) > limit:
            idxs, fut = running.pop(0)
            for idx, e in zip(idxs, fut.result()):
                out[idx] = e

    def flush(pool: ThreadPoolExecutor, length: int) -> None:
        nonlocal n_pending
        batch = pending.pop(length)
        n_pending -= len(batch)
        running.append(([i for i, _ in batch], pool.submit(enc.embed, np.stack([m for _, m in batch]))))
        collect(2 * workers)  # bounded work in flight

    total = sum(r.duration for r in regions)
    done = 0.0
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="g4-embed") as pool:
        for ri, wav in _iter_region_audio(waveform, regions):
            region = regions[ri]
            # Regions longer than a few minutes are cut so one mel spectrogram stays small.
            piece = 300 * SAMPLE_RATE
            for p0 in range(0, max(1, len(wav)), piece):
                part = _normalize_volume(wav[p0 : p0 + piece])
                mel = enc.mel(part)
                n = min(len(mel), max(1, len(part) // MEL_HOP))
                if n < min_frames:
                    continue
                first = round(region.start * FRAME_RATE) + p0 // MEL_HOP
                for s0 in _window_starts(n, win, hop):
                    e0 = min(n, s0 + win)
                    idx = len(starts)
                    starts.append(first + s0)
                    ends.append(first + e0)
                    region_ids.append(ri)
                    full.append(e0 - s0 == win)
                    m = _window_level(mel[s0:e0], part[s0 * MEL_HOP : e0 * MEL_HOP])
                    pending.setdefault(e0 - s0, []).append((idx, m))
                    n_pending += 1
                    if len(pending[e0 - s0]) >= options.batch_size:
                        flush(pool, e0 - s0)
                    elif n_pending > 4 * options.batch_size:  # many odd-length short windows: bound memory
                        flush(pool, max(pending, key=lambda k: len(pending[k])))
            done += region.duration
            if hook:
                hook("speakers", int(done), int(total))
        for length in sorted(pending):
            flush(pool, length)
        collect(0)
    emb = (np.stack([out[i] for i in range(len(starts))]).astype(np.float32) if starts
           else np.zeros((0, 256), np.float32))
    return _Windows(
        start=np.asarray(starts, dtype=np.int64),
        end=np.asarray(ends, dtype=np.int64),
        region=np.asarray(region_ids, dtype=np.int64),
        full=np.asarray(full, dtype=bool),
        emb=emb,
    )


# --------------------------------------------------------------------------- clustering


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def _centroids(emb: np.ndarray, labels: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    ids = np.unique(labels) if ids is None else ids
    return _l2(np.stack([emb[labels == c].mean(axis=0) for c in ids]))


def _kmeans(emb: np.ndarray, k: int, max_fit: int) -> np.ndarray:
    """Deterministic k-means labels; long recordings fit on an even subsample, then assign all."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    fit = emb if len(emb) <= max_fit else emb[np.linspace(0, len(emb) - 1, max_fit).round().astype(int)]
    with threadpool_limits(limits=1):  # tiny problems: threads only add waiting on a busy machine
        km = KMeans(n_clusters=k, n_init=10 if len(fit) <= 2000 else 4, random_state=0).fit(fit)
    return np.argmax(emb @ _l2(km.cluster_centers_).T, axis=1).astype(np.int64)


def _reassign(emb: np.ndarray, labels: np.ndarray, drop: int) -> np.ndarray:
    keep = np.array([c for c in np.unique(labels) if c != drop])
    out = labels.copy()
    moved = labels == drop
    out[moved] = keep[np.argmax(emb[moved] @ _centroids(emb, labels, keep).T, axis=1)]
    return out


def _runs(labels: np.ndarray, region: np.ndarray) -> list[tuple[int, int, int, int | None, int | None]]:
    """Runs of one label inside one region: (label, first, end, label before, label after)."""
    out = []
    n = len(labels)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and region[j + 1] == region[i] and labels[j + 1] == labels[i]:
            j += 1
        before = int(labels[i - 1]) if i > 0 and region[i - 1] == region[i] else None
        after = int(labels[j + 1]) if j + 1 < n and region[j + 1] == region[i] else None
        out.append((int(labels[i]), i, j + 1, before, after))
        i = j + 1
    return out


def _drop_transitional(emb: np.ndarray, labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Remove clusters made of windows that straddle a speaker change.

    Where two people speak without a pause, the windows over the change blend both voices and can
    form a cluster of their own. Such a cluster lives between two other speakers inside one region:
    most of its windows sit in runs with one speaker before and another after.
    """
    while len(np.unique(labels)) > 1:
        worst, share = None, 0.5
        totals = np.bincount(labels)
        sandwiched = np.zeros_like(totals)
        for lab, a, b, before, after in _runs(labels, region):
            if before is not None and after is not None and before != after:
                sandwiched[lab] += b - a
        for c in np.unique(labels):
            if sandwiched[c] / totals[c] >= share:
                worst, share = int(c), sandwiched[c] / totals[c]
        if worst is None:
            break
        labels = _reassign(emb, labels, worst)
    return labels


def _drop_small(emb: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if len(ids) <= 1 or counts.min() >= min_size:
            return labels
        labels = _reassign(emb, labels, int(ids[np.argmin(counts)]))


def _separation(a: np.ndarray, b: np.ndarray) -> float:
    """Fisher's ratio of two clusters' windows projected on the line between their centroids: the squared
    distance of the means over the summed variances. One voice cut in two by content is one mode cut in half
    (about 3.5 for a Gaussian); two voices are two modes (measured: at most 6 for one voice, at least 9.7 for two,
    among clusters of 40 or more windows whose centroids are 0.905-0.94 alike)."""
    axis = _l2(a.mean(axis=0) - b.mean(axis=0))
    pa, pb = a @ axis, b @ axis
    return float((pa.mean() - pb.mean()) ** 2 / max(pa.var() + pb.var(), 1e-12))


def _plausible(emb: np.ndarray, labels: np.ndarray, region: np.ndarray, options: DiarizationOptions) -> bool:
    """Do these clusters look like different voices rather than one voice split by content?

    Voices stay put inside a speech region (the label rarely switches between neighbouring
    windows), and two clusters of one voice keep nearly the same centroid, unless both are large
    and clearly two modes (`_separation`): two similar voices with plenty of speech each.
    """
    same_region = region[1:] == region[:-1]
    switches = float(np.mean(labels[1:][same_region] != labels[:-1][same_region])) if same_region.any() else 0.0
    ids = np.unique(labels)
    cent = _centroids(emb, labels, ids)
    sim = cent @ cent.T
    np.fill_diagonal(sim, -1.0)
    log.debug("k=%d: switch rate %.3f, closest centroids %.3f", len(cent), switches, sim.max())
    if sim.max() <= options.distinct_similarity:  # one voice split by content keeps nearly the same centroid
        return switches <= options.distinct_switch_rate
    if switches > options.max_switch_rate:
        return False
    for i, j in zip(*np.nonzero(np.triu(sim > options.max_centroid_similarity))):
        a, b = emb[labels == ids[i]], emb[labels == ids[j]]
        if min(len(a), len(b)) < options.separable_windows:
            return False
        separation = _separation(a, b)
        log.debug("k=%d: centroids %.3f alike, separation %.1f", len(cent), sim[i, j], separation)
        if separation < options.min_separation:
            return False
    return True


def cluster(emb: np.ndarray, region: np.ndarray, options: DiarizationOptions) -> np.ndarray:
    """Speaker labels 0..k-1 for window embeddings in time order, the count found or given.

    For k = 2, 3, ... k-means proposes k voices; clusters of change-straddling windows and clusters
    of fewer than `min_cluster_windows` are folded into the nearest voice; the proposal is kept while
    it looks like distinct voices (`_plausible`), and the search stops after `patience` + 1 k in a row that do
    not (k-means may split the wrong voice at one k and find the right ones at the next).
    """
    n = len(emb)
    emb = _l2(emb)
    fixed = options.num_speakers
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if fixed is not None:
        k = min(fixed, n)
        labels = np.zeros(n, dtype=np.int64) if k <= 1 else _kmeans(emb, k, options.max_fit)
    else:
        labels = np.zeros(n, dtype=np.int64)
        found, failed = 1, 0
        for k in range(2, min(options.max_speakers, n // max(1, options.min_cluster_windows)) + 1):
            trial = _kmeans(emb, k, options.max_fit)
            trial = _drop_small(emb, _drop_transitional(emb, trial, region), options.min_cluster_windows)
            k_eff = len(np.unique(trial))
            if k_eff > 1 and not _plausible(emb, trial, region, options):
                failed += 1
                if failed > options.patience:
                    break
                continue
            if k_eff > found:
                labels, found, failed = trial, k_eff, 0
        if found < options.min_speakers and n >= options.min_speakers:
            labels = _kmeans(emb, options.min_speakers, options.max_fit)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


# --------------------------------------------------------------------------- turns


def _frame_labels(
    windows: _Windows, cent: np.ndarray, regions: tuple[SpeechRegion, ...]
) -> list[tuple[int, np.ndarray]]:
    """For each speech region, (first voting frame, speaker index per voting frame)."""
    scores = windows.emb @ cent.T  # (windows, speakers)
    out: list[tuple[int, np.ndarray]] = []
    order = np.argsort(windows.region, kind="stable")
    bounds = np.searchsorted(windows.region[order], np.arange(len(regions) + 1))
    for ri, r in enumerate(regions):
        a = math.floor(r.start * FRAME_RATE / VOTE_STEP)
        b = max(a + 1, math.ceil(r.end * FRAME_RATE / VOTE_STEP))
        idx = order[bounds[ri] : bounds[ri + 1]]
        if len(idx) == 0:
            out.append((a, np.full(b - a, -1, dtype=np.int64)))  # decided by neighbours later
            continue
        acc = np.zeros((b - a, cent.shape[0]), dtype=np.float64)
        cnt = np.zeros(b - a, dtype=np.float64)
        for w in idx:
            s = max(a, int(windows.start[w] // VOTE_STEP)) - a
            e = min(b, int(-(-windows.end[w] // VOTE_STEP))) - a
            acc[s:e] += scores[w]
            cnt[s:e] += 1
        # Frames no window covers (the padded region edges) take the nearest covered frame's scores.
        covered = np.flatnonzero(cnt > 0)
        if len(covered) < len(cnt):
            nearest = covered[np.clip(np.searchsorted(covered, np.arange(len(cnt))), 0, len(covered) - 1)]
            left = covered[np.clip(np.searchsorted(covered, np.arange(len(cnt))) - 1, 0, len(covered) - 1)]
            pick = np.where(np.abs(left - np.arange(len(cnt))) < np.abs(nearest - np.arange(len(cnt))), left, nearest)
            acc, cnt = acc[pick], cnt[pick]
        out.append((a, np.argmax(acc / cnt[:, None], axis=1)))
    return out


def _smooth_runs(labels: np.ndarray, min_len: int) -> np.ndarray:
    """Give runs shorter than min_len to the longer neighbour run, shortest first."""
    labels = labels.copy()
    while True:
        change = np.flatnonzero(np.diff(labels)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(labels)]])
        if len(starts) <= 1:
            return labels
        lengths = ends - starts
        i = int(np.argmin(lengths))
        if lengths[i] >= min_len:
            return labels
        if i == 0:
            labels[starts[i] : ends[i]] = labels[ends[i]]
        elif i == len(starts) - 1:
            labels[starts[i] : ends[i]] = labels[starts[i] - 1]
        else:
            left, right = lengths[i - 1], lengths[i + 1]
            labels[starts[i] : ends[i]] = labels[starts[i] - 1] if left >= right else labels[ends[i]]


def _piece_scores(windows: _Windows | None, pieces: tuple[tuple[int, SpeechRegion], ...], cent: np.ndarray
                  ) -> dict[int, list[tuple[SpeechRegion, np.ndarray]]]:
    """Region index -> [(piece, its own window's score against each speaker)]."""
    out: dict[int, list[tuple[SpeechRegion, np.ndarray]]] = {}
    if windows is None:
        return out
    for w, score in zip(windows.region, windows.emb @ cent.T):
        ri, piece = pieces[w]
        out.setdefault(ri, []).append((piece, score))
    return out


EDGE_FRAMES = 3  # voting frames (60 ms): a piece this close to its region's edge takes the frames to it


def _give_pieces(labels: np.ndarray, first: int, pieces: list[tuple[SpeechRegion, np.ndarray]],
                 margin: float) -> np.ndarray:
    """A piece goes to the speaker its own window is closest to, where that is clearly (`margin`) closer than to
    the speaker the sliding windows gave it. A piece that ends (or starts) within `EDGE_FRAMES` of its region's
    edge takes those frames too: left to the speaker before, a frame made a turn of 2 ms."""
    labels = labels.copy()
    for piece, score in pieces:
        s = max(0, math.floor(piece.start * FRAME_RATE / VOTE_STEP) - first)
        e = min(len(labels), math.ceil(piece.end * FRAME_RATE / VOTE_STEP) - first)
        if e <= s:
            continue
        s = 0 if s < EDGE_FRAMES else s
        e = len(labels) if len(labels) - e < EDGE_FRAMES else e
        now = int(np.bincount(labels[s:e]).argmax())
        best = int(np.argmax(score))
        if best != now and score[best] - score[now] >= margin:
            labels[s:e] = best
    return labels


def _turns(
    frame_labels: list[tuple[int, np.ndarray]],
    regions: tuple[SpeechRegion, ...],
    options: DiarizationOptions,
    pieces: dict[int, list[tuple[SpeechRegion, np.ndarray]]] | None = None,
) -> list[tuple[float, float, int]]:
    min_run = max(1, round(options.min_turn_in_region * FRAME_RATE / VOTE_STEP))
    step = VOTE_STEP / FRAME_RATE
    raw: list[tuple[float, float, int]] = []
    for ri, ((a, labels), r) in enumerate(zip(frame_labels, regions)):
        if len(labels) and labels[0] < 0:
            raw.append((r.start, r.end, -1))
            continue
        labels = _smooth_runs(labels, min_run)
        if pieces and ri in pieces:
            labels = _give_pieces(labels, a, pieces[ri], options.piece_margin)
        change = np.flatnonzero(np.diff(labels)) + 1
        cuts = [0, *change.tolist(), len(labels)]
        for s, e in itertools.pairwise(cuts):
            t0 = r.start if s == 0 else (a + s) * step
            t1 = r.end if e == len(labels) else (a + e) * step
            raw.append((t0, t1, int(labels[s])))
    # Regions too short for an embedding take the speaker of the nearer neighbour.
    for i, (t0, t1, spk) in enumerate(raw):
        if spk >= 0:
            continue
        prev = next((raw[j] for j in range(i - 1, -1, -1) if raw[j][2] >= 0), None)
        nxt = next((raw[j] for j in range(i + 1, len(raw)) if raw[j][2] >= 0), None)
        cands = [c for c in (prev, nxt) if c is not None]
        if cands:
            best = min(cands, key=lambda c: min(abs(c[0] - t1), abs(t0 - c[1])))
            raw[i] = (t0, t1, best[2])
        else:
            raw[i] = (t0, t1, 0)
    merged: list[list] = []
    for t0, t1, spk in raw:
        if merged and merged[-1][2] == spk and t0 - merged[-1][1] < options.min_gap:
            merged[-1][1] = max(merged[-1][1], t1)
        else:
            merged.append([t0, t1, spk])
    return [(float(a), float(b), int(s)) for a, b, s in merged]


# --------------------------------------------------------------------------- public


def diarize(
    waveform: np.ndarray,
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int = 8,
    options: DiarizationOptions | None = None,
    regions: tuple[SpeechRegion, ...] | None = None,
    hook: Hook | None = None,
) -> Diarization:
    """Speaker turns of a 16 kHz mono waveform (memory-mapped is fine); no speech gives no turns.

    `num_speakers` fixes the count; otherwise it is found between `min_speakers` and `max_speakers`.
    `regions` reuses speech regions found before (else Silero VAD finds them).
    """
    base = options or DiarizationOptions()
    options = DiarizationOptions(**{
        **{f: getattr(base, f) for f in base.__dataclass_fields__},
        "num_speakers": num_speakers if num_speakers is not None else base.num_speakers,
        "min_speakers": min_speakers if options is None else base.min_speakers,
        "max_speakers": max_speakers if options is None else base.max_speakers,
    })
    _check_counts(options)
    waveform = check_waveform(waveform)
    duration = len(waveform) / SAMPLE_RATE
    with torch_threads(1):  # see embed_windows: single-threaded ops are robust on busy machines
        if regions is None:
            regions = detect_speech(waveform, options.vad, hook=hook)
        if not regions:
            log.info("diarization: no speech found")
            return Diarization(duration=duration, speakers=(), turns=())
        windows = embed_windows(waveform, regions, options, hook=hook)
        pieces = _pieces(waveform, regions, options)
        piece_windows = embed_windows(waveform, tuple(p for _, p in pieces), options) if pieces else None
    if len(windows.emb) == 0:
        # Only blips shorter than an embedding window: call it one speaker.
        turns = [SpeakerTurn(r.start, r.end, "S1") for r in regions]
        return Diarization(duration=duration, speakers=("S1",), turns=tuple(turns))
    full = windows.full if windows.full.sum() >= 2 else np.ones(len(windows.emb), dtype=bool)
    labels = cluster(windows.emb[full], windows.region[full], options)
    cent = _centroids(_l2(windows.emb[full]), labels)
    frame_labels = _frame_labels(windows, cent, regions)
    raw = _turns(frame_labels, regions, options, _piece_scores(piece_windows, pieces, cent))
    # Name speakers in order of first appearance; drop a cluster that ended up with no turn.
    names: dict[int, str] = {}
    turns = []
    for t0, t1, spk in raw:
        if spk not in names:
            names[spk] = f"S{len(names) + 1}"
        turns.append(SpeakerTurn(round(t0, 3), round(min(t1, duration), 3), names[spk]))
    log.info("diarization: %d speaker%s, %d turn%s", len(names), "" if len(names) == 1 else "s", len(turns),
             "" if len(turns) == 1 else "s")
    return Diarization(duration=duration, speakers=tuple(names.values()), turns=tuple(turns))


def _check_counts(options: DiarizationOptions) -> None:
    if options.num_speakers is not None and options.num_speakers < 1:
        raise G4Error(f"--speakers must be at least 1 (got {options.num_speakers})")
    if options.min_speakers < 1:
        raise G4Error(f"--min-speakers must be at least 1 (got {options.min_speakers})")
    if options.max_speakers < options.min_speakers:
        raise G4Error(
            f"--max-speakers ({options.max_speakers}) is below --min-speakers ({options.min_speakers}); "
            "give a range with min <= max"
        )


def rttm_file_id(name: str) -> str:
    """A recording's name as an RTTM file id, which cannot hold whitespace: "with space" -> "with_space"."""
    return "_".join(str(name).split()) or "recording"


def rttm_lines(diarization: Diarization, file_id: str = "recording") -> list[str]:
    """NIST RTTM: `SPEAKER <file> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>` per turn."""
    file_id = rttm_file_id(file_id)
    return [
        f"SPEAKER {file_id} 1 {t.start:.3f} {t.duration:.3f} <NA> <NA> {t.speaker} <NA> <NA>"
        for t in diarization.turns
    ]


def write_rttm(diarization: Diarization, path: str | os.PathLike[str], file_id: str = "recording") -> None:
    """Write the turns as RTTM atomically (a temporary file renamed over the target)."""
    from .atomic import write_text
    from .errors import OutputError

    text = "".join(line + "\n" for line in rttm_lines(diarization, file_id))
    try:
        write_text(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write the RTTM file {path} ({exc.strerror or exc}); check the folder") from exc
