"""Speech regions: where someone speaks, found with Silero VAD on the 16 kHz waveform.

The `silero-vad` package ships its weights (a TorchScript model). Silero scores 32 ms frames
(512 samples, plus the previous frame's last 64 samples as context) with a small conv encoder and
one LSTM cell. Calling the scripted model frame by frame costs about 50 s per hour of audio on two
cores; here the conv encoder runs batched over a whole block of frames and the LSTM runs as one
sequence, with the LSTM state and the 64-sample context carried from block to block. The result
equals the frame-by-frame model (to float rounding) at about a tenth of the cost, and the waveform
is read in blocks, so a memory-mapped recording of any length stays out of memory. The encoder (most
of the time: 1.6 of 1.9 s for 30 minutes on one core) runs on every core, the LSTM on one; the
probabilities are the same with any number of cores (36 min of audio on 2 cores: 2.9 -> 2.2 s).

The probabilities become regions with silero's own `get_speech_timestamps_from_probs`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mmap
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import MediaError
from .records import SAMPLE_RATE, SpeechRegion

log = logging.getLogger("mediapipe_g4")

Hook = Callable[[str, int, int], None]

FRAME_SAMPLES = 512  # Silero's frame at 16 kHz: 32 ms
CONTEXT_SAMPLES = 64
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


@dataclass(frozen=True)
class VadOptions:
    """How speech is told from silence. Echoed into outputs, so a result says how it was made."""

    threshold: float = 0.5  # a frame whose speech probability reaches this starts speech
    neg_threshold: float | None = None  # speech ends below this (default: threshold - 0.15)
    min_speech: float = 0.2  # seconds; shorter bursts are dropped (coughs, clicks)
    min_silence: float = 0.12  # seconds of silence that end a region (turn-taking pauses are longer)
    speech_pad: float = 0.03  # seconds added at both ends of a region (never past a neighbour)
    block_seconds: float = 120.0  # the waveform is read and scored in blocks of this length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Use `n` torch threads (default: the CPUs this process may use) and restore the old count."""
    import torch

    old = torch.get_num_threads()
    want = n or usable_cpus()
    if want != old:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _BatchedSilero:
    """Silero VAD's 16 kHz network with the encoder batched over frames (weights from the package)."""

    def __init__(self) -> None:
        import torch

        threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
                from silero_vad import load_silero_vad

                scripted = load_silero_vad(onnx=False)
        except Exception as exc:
            raise MediaError(
                f"could not load the Silero VAD model from the silero-vad package ({exc}); "
                "reinstall it with `pip install --force-reinstall silero-vad`"
            ) from exc
        finally:
            torch.set_num_threads(threads)  # importing silero_vad sets torch to one thread
        sd = {k: v.detach().clone().float() for k, v in scripted._model.state_dict().items()}
        self.stft = sd["stft.forward_basis_buffer"]  # (258, 1, 256): real and imaginary DFT rows
        self.convs = [
            (sd[f"encoder.{i}.reparam_conv.weight"], sd[f"encoder.{i}.reparam_conv.bias"], stride)
            for i, stride in enumerate((1, 2, 2, 1))
        ]
        self.lstm = torch.nn.LSTM(128, 128, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.lstm, f"{name}_l0").copy_(sd[f"decoder.rnn.{name}"])
        self.lstm.eval()
        self.head_w = sd["decoder.decoder.2.weight"]
        self.head_b = sd["decoder.decoder.2.bias"]

    def __call__(self, frames, state):
        """frames: (n, 576) float tensor (64 context + 512 samples); returns (probabilities (n,), state)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            with torch_threads():  # the encoder: large batched convolutions, most of the time, on every core
                x = F.pad(frames.unsqueeze(1), (0, CONTEXT_SAMPLES), mode="reflect")
                x = F.conv1d(x, self.stft, stride=128)
                half = x.shape[1] // 2
                x = torch.sqrt(x[:, :half] ** 2 + x[:, half:] ** 2)
                for weight, bias, stride in self.convs:
                    x = F.relu(F.conv1d(x, weight, bias, stride=stride, padding=1))
            h, state = self.lstm(x.squeeze(-1).unsqueeze(0), state)  # a chain of small steps: one thread
            y = torch.sigmoid(F.conv1d(F.relu(h[0]).unsqueeze(-1), self.head_w, self.head_b))
            return y.reshape(-1), state


@functools.lru_cache(maxsize=1)
def _model() -> _BatchedSilero:
    return _BatchedSilero()


def check_waveform(waveform: np.ndarray) -> np.ndarray:
    """The waveform as a 1-D float array (not copied when it already is one), or a clear error."""
    if not isinstance(waveform, np.ndarray):
        waveform = np.asarray(waveform)
    if waveform.ndim == 2 and 1 in waveform.shape:
        waveform = waveform.reshape(-1)
    if waveform.ndim != 1:
        raise MediaError(
            f"expected a mono waveform (one dimension), got shape {waveform.shape}; "
            "decode the recording with media.decode_audio, which downmixes to 16 kHz mono"
        )
    if np.issubdtype(waveform.dtype, np.integer):
        scale = float(np.iinfo(waveform.dtype).max) + 1.0
        return waveform.astype(np.float32) / scale
    if not np.issubdtype(waveform.dtype, np.floating):
        raise MediaError(f"expected float audio samples, got {waveform.dtype}")
    return waveform


class _DCBlocker:
    """A one-pole high-pass at about 10 Hz that removes a DC offset, with its state kept between blocks."""

    def __init__(self) -> None:
        self.zi: np.ndarray | None = None
        self.b = np.array([1.0, -1.0])
        self.a = np.array([1.0, -0.996])  # pole at 1 - 2*pi*10/16000

    def __call__(self, block: np.ndarray) -> np.ndarray:
        from scipy.signal import lfilter, lfilter_zi

        if self.zi is None:
            self.zi = lfilter_zi(self.b, self.a) * block[0]
        y, self.zi = lfilter(self.b, self.a, block, zi=self.zi)
        return y.astype(np.float32)


FAULT_SLACK = 2 << 20  # bytes: a page fault may map this much of the file around the page (large folios)


def release_pages(waveform: np.ndarray, start: int, end: int) -> None:
    """Drop the pages of samples [start, end) of a memory-mapped waveform from this process, and those up to
    `FAULT_SLACK` either side.

    Reading a long recording through its mapping would otherwise leave every page resident, and
    the process would look as big as the recording. The data stays in the OS file cache. A fault maps
    more than its page (fault-around, the file's large folios): dropping only the range's own pages left
    0.5-1.5 MB per transcription clip resident. The mapping is read-only, so dropping a neighbour's page
    costs at most a fault from the file cache when it is read.
    """
    mm = getattr(waveform, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    base = int(getattr(waveform, "offset", 0))
    page = mmap.PAGESIZE
    a = max(0, base + start * waveform.itemsize - FAULT_SLACK) // page * page
    b = min(len(mm), base + end * waveform.itemsize + FAULT_SLACK)
    if b > a:
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED, a, b - a)


def iter_blocks(waveform: np.ndarray, block_samples: int, *, dc_block: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, float32 block) over the waveform, read block by block, DC removed, NaN/inf zeroed."""
    waveform = check_waveform(waveform)
    dc = _DCBlocker() if dc_block else None
    for start in range(0, len(waveform), block_samples):
        block = np.asarray(waveform[start : start + block_samples], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
        if dc is not None:
            block = dc(block)
        release_pages(waveform, max(0, start - 1), start + len(block))
        yield start, block.astype(np.float32, copy=False)


def speech_probabilities(
    waveform: np.ndarray, *, block_seconds: float = 120.0, hook: Hook | None = None
) -> np.ndarray:
    """Silero's speech probability for each 32 ms frame of the waveform (float32, one per frame)."""
    waveform = check_waveform(waveform)
    n_frames = -(-len(waveform) // FRAME_SAMPLES)
    out = np.zeros(n_frames, dtype=np.float32)
    if n_frames == 0:
        return out
    model = _model()
    block = max(1, int(block_seconds * SAMPLE_RATE) // FRAME_SAMPLES) * FRAME_SAMPLES
    with torch_threads(1):  # the LSTM's chain of small steps: one thread is fastest, and robust when cores are busy
        _score_blocks(waveform, block, model, out, hook)
    return out


def _score_blocks(waveform: np.ndarray, block: int, model: _BatchedSilero, out: np.ndarray, hook: Hook | None) -> None:
    import torch

    context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
    state = None
    for start, samples in iter_blocks(waveform, block):
        if len(samples) % FRAME_SAMPLES:
            samples = np.pad(samples, (0, FRAME_SAMPLES - len(samples) % FRAME_SAMPLES))
        joined = torch.from_numpy(np.concatenate([context, samples]))
        frames = joined.unfold(0, FRAME_SAMPLES + CONTEXT_SAMPLES, FRAME_SAMPLES)
        probs, state = model(frames, state)
        first = start // FRAME_SAMPLES
        out[first : first + len(probs)] = probs.numpy()
        context = samples[-CONTEXT_SAMPLES:].copy()
        if hook:
            hook("speech", min(len(waveform), start + block) // SAMPLE_RATE, max(1, len(waveform) // SAMPLE_RATE))


def regions_from_probabilities(
    probs: np.ndarray, n_samples: int, options: VadOptions = VadOptions()
) -> tuple[SpeechRegion, ...]:
    """Speech regions from per-frame probabilities, by silero's own hysteresis and padding rules."""
    from silero_vad import get_speech_timestamps_from_probs

    if len(probs) == 0:
        return ()
    stamps = get_speech_timestamps_from_probs(
        [float(p) for p in probs],
        sampling_rate=SAMPLE_RATE,
        threshold=options.threshold,
        neg_threshold=options.neg_threshold,
        min_speech_duration_ms=round(options.min_speech * 1000),
        min_silence_duration_ms=round(options.min_silence * 1000),
        speech_pad_ms=round(options.speech_pad * 1000),
        audio_length_samples=n_samples,
    )
    return tuple(
        SpeechRegion(start=s["start"] / SAMPLE_RATE, end=min(s["end"], n_samples) / SAMPLE_RATE)
        for s in stamps
        if s["end"] > s["start"]
    )


def detect_speech(
    waveform: np.ndarray, options: VadOptions | None = None, *, hook: Hook | None = None
) -> tuple[SpeechRegion, ...]:
    """Where someone speaks in a 16 kHz mono waveform, in time order. Silence gives ()."""
    options = options or VadOptions()
    waveform = check_waveform(waveform)
    probs = speech_probabilities(waveform, block_seconds=options.block_seconds, hook=hook)
    regions = regions_from_probabilities(probs, len(waveform), options)
    log.info(
        "speech: %d regions, %.1f s of %.1f s",
        len(regions), sum(r.duration for r in regions), len(waveform) / SAMPLE_RATE,
    )
    return regions
