"""How much memory the model needs, and so how many tokens of context this machine can afford.

The shape comes from the checkpoint's config (no weights loaded) or, without one, from the published
Gemma 4 12B config. The estimate is weights + KV cache + the working memory of one prefill chunk;
its constants were fitted to measurements of the 12B shape on an H100 (DESIGN.md): 8 k-token chunked
prefills of 32 k / 131 k / 262 k tokens peaked at 29 / 33 / 38 GB, and this model says 29 / 33 / 37.
The CUDA context is not in these numbers: the budget leaves 10 % of the free memory for it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("mediapipe_g4")

GB = 1e9
PREFILL_CHUNK = 8192  # long text prompts are prefilled in chunks of this many tokens
RUNTIME_OVERHEAD = 0.5 * GB  # allocator slack, logits, small buffers
MIN_CONTEXT = 8192  # below this the notes prompt cannot hold a useful part of a meeting
FALLBACK_CONTEXT = 32768  # the budget when the model does not fit at all (the run will say so)


@dataclass(frozen=True)
class ModelShape:
    """What the memory depends on, per decoder layer and in total."""

    name: str
    params: float  # all parameters, in units
    sixteen_bit_params: float  # what bitsandbytes leaves in 16 bits: embeddings, audio/vision towers, the head
    hidden_size: int
    intermediate_size: int
    layer_types: tuple[str, ...]  # "sliding_attention" / "full_attention"
    kv_heads: tuple[int, ...]  # per layer; 0 where the layer reuses another layer's cache
    head_dims: tuple[int, ...]
    sliding_window: int
    context_window: int

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    def kv_bytes(self, tokens: int, dtype_bytes: int = 2, *, batch: int = 1) -> float:
        """KV cache for `tokens` per sequence: keys and values per layer, sliding layers capped at the window."""
        total = 0.0
        for kind, heads, dim in zip(self.layer_types, self.kv_heads, self.head_dims):
            kept = min(tokens, self.sliding_window) if kind == "sliding_attention" else tokens
            total += 2 * heads * dim * kept * dtype_bytes
        return total * batch

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> float:
        """The growth of the cache per token once past the sliding window (global layers only)."""
        return sum(
            2 * h * d * dtype_bytes
            for kind, h, d in zip(self.layer_types, self.kv_heads, self.head_dims)
            if kind != "sliding_attention"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gemma4_12b() -> ModelShape:
    # google/gemma-4-12B-it: 48 layers, 5 sliding (window 1024, 8 KV heads x 256) : 1 global
    # (1 KV head x 512, K = V, but the cache still holds both), hidden 3840, MLP 15360, 11.96 B parameters.
    kinds = tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(48))
    return ModelShape(
        name="google/gemma-4-12B-it",
        params=11.96e9,
        sixteen_bit_params=1.060e9,  # the token embedding (1.007 B) and the audio/image embedders, on the meta device
        hidden_size=3840,
        intermediate_size=15360,
        layer_types=kinds,
        kv_heads=tuple(1 if k == "full_attention" else 8 for k in kinds),
        head_dims=tuple(512 if k == "full_attention" else 256 for k in kinds),
        sliding_window=1024,
        context_window=262_144,
    )


GEMMA4_12B = _gemma4_12b()


def shape_from_config(config: Any, name: str, *, params: float | None = None) -> ModelShape:
    """The shape of a `gemma4_unified`/`gemma4` config (a transformers config object, no weights)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = tuple(text.layer_types)
    modes = getattr(text, "kv_sharing_modes", None) or [None] * len(kinds)
    per_layer = getattr(text, "per_layer_config", None) or {}
    heads, dims = [], []
    for i in range(len(kinds)):
        layer = per_layer.get(i) if isinstance(per_layer, dict) else per_layer[i]
        h = getattr(layer, "num_key_value_heads", None) or text.num_key_value_heads
        d = getattr(layer, "head_dim", None) or text.head_dim
        heads.append(0 if modes[i] == "reuse" else h)
        dims.append(d)
    total, sixteen_bits = count_parameters(config)
    return ModelShape(
        name=name,
        params=float(params if params is not None else total),
        sixteen_bit_params=sixteen_bits,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        layer_types=kinds,
        kv_heads=tuple(heads),
        head_dims=tuple(dims),
        sliding_window=int(text.sliding_window or 0),
        context_window=int(text.max_position_embeddings),
    )


def count_parameters(config: Any) -> tuple[float, float]:
    """(all parameters, those that `--quantize` leaves in 16 bits) of the model a config describes, counted on the
    meta device (nothing allocated; a second for the 12B). bitsandbytes quantizes the weight of each linear layer
    outside `QUANT_SKIP`; the rest stays: every embedding (E2B/E4B's per-layer one is 2 B of their 5 B), the audio
    and vision towers and embedders, the norms."""
    import torch
    from transformers import AutoModelForMultimodalLM
    from transformers.quantizers.quantizers_utils import should_convert_module

    from .transformers_engine import QUANT_SKIP

    with torch.device("meta"):
        model = AutoModelForMultimodalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    quantized = sum(m.weight.numel() for n, m in model.named_modules()
                    if type(m) is torch.nn.Linear and should_convert_module(n, QUANT_SKIP))
    return float(total), float(total - quantized)


# --------------------------------------------------------------------------- bytes


RUNTIME_BYTES = 1.5e9  # beside the weights, at the least: torch, the processor, one short request's activations


def weights_room(device: str) -> tuple[float, str, bool]:
    """(bytes a model's weights may take on `device`, the device's name, whether free swap is counted in): free
    memory on CUDA, free RAM and swap on a CPU or a Mac (torch lets a Mac's GPU go past macOS's recommended share),
    less `RUNTIME_BYTES`."""
    room = device_memory(device)
    if room.device == "cuda":
        return room.available - RUNTIME_BYTES, room.name, False
    swap = free_swap()
    return system_memory()[1] + swap - RUNTIME_BYTES, room.name, swap > 0


def choose_dtype(shape: ModelShape, device: str, requested: str | None = None, quantize: str | None = None) -> str:
    """The dtype to compute in: as asked, else `pick_dtype`'s (with bitsandbytes on CUDA: the GPU's 16 bits); but
    a CPU takes the weights' own bfloat16 when float32 weights would not fit in free RAM and swap: half the memory,
    faster to decode on this project's CPU (AVX512-BF16), slower to prefill (and when bfloat16 does not fit either,
    the error says how far the smaller of the two is from fitting)."""
    if quantize and requested in (None, "auto") and device.startswith("cuda"):
        return pick_dtype(device)
    dtype = pick_dtype(device, requested)
    if dtype == "float32" and requested in (None, "auto") and device == "cpu":
        room = weights_room(device)[0]
        if weights_bytes(shape, "float32") > room:
            return "bfloat16"
    return dtype


def dtype_bytes(dtype: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 2)


def weights_bytes(shape: ModelShape, dtype: str = "bfloat16", quantize: str | None = None) -> float:
    """Weights in memory; bitsandbytes keeps `sixteen_bit_params` in 16 bits and adds ~3 % of quant state."""
    if quantize in ("4bit", "8bit"):
        per = 0.5 if quantize == "4bit" else 1.0
        rest = shape.params - shape.sixteen_bit_params
        return shape.sixteen_bit_params * 2 + rest * per * 1.03
    return shape.params * dtype_bytes(dtype)


def prefill_workspace(shape: ModelShape, chunk: int, context: int, dtype: str = "bfloat16", *, batch: int = 1) -> float:
    """Working memory of prefilling `chunk` tokens (per sequence) against `context` tokens."""
    b = dtype_bytes(dtype)
    # Boolean masks for the sliding and the global layers (2 bytes per query-key pair, plus what the
    # measurements add on top: 2.4), the MLP and attention activations of the chunk, and one sliding
    # layer's window + chunk of keys and values while it attends.
    masks = 2.4 * batch * chunk * context
    activations = batch * chunk * (24 * shape.hidden_size + 6 * shape.intermediate_size) * b
    sliding = max(
        (2 * h * d * b * (shape.sliding_window + chunk)
         for kind, h, d in zip(shape.layer_types, shape.kv_heads, shape.head_dims) if kind == "sliding_attention"),
        default=0,
    ) * batch
    return masks + activations + sliding


def peak_bytes(
    shape: ModelShape,
    tokens: int,
    *,
    batch: int = 1,
    dtype: str = "bfloat16",
    quantize: str | None = None,
    chunk: int = PREFILL_CHUNK,
) -> float:
    """Peak memory of running `batch` prompts of `tokens` tokens each (prompt + answer)."""
    b = dtype_bytes(dtype if not quantize else "bfloat16")
    step = min(tokens, chunk)
    return (
        weights_bytes(shape, dtype, quantize)
        + shape.kv_bytes(tokens, b, batch=batch)
        + prefill_workspace(shape, step, tokens, dtype if not quantize else "bfloat16", batch=batch)
        + RUNTIME_OVERHEAD
    )


# --------------------------------------------------------------------------- this machine


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # "cuda", "mps", "cpu"
    name: str
    total: float  # bytes
    available: float  # bytes the model may use

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "name": self.name, "total_gb": round(self.total / GB, 1),
                "available_gb": round(self.available / GB, 1)}


def pick_device(requested: str | None = None) -> str:
    """`requested` if given (checked: `check_device`); else CUDA, then Apple MPS, then CPU."""
    if requested and requested != "auto":
        return check_device(requested)
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if _mps_available(torch):
            return "mps"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "cpu"


def _mps_available(torch: Any) -> bool:
    """Whether this torch has Apple's MPS and can use it here."""
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def check_device(requested: str) -> str:
    """`--device` as torch names it (cpu, cuda, cuda:N, mps), if this machine has it; else a ModelError that says
    what it has."""
    import re

    import torch

    from .errors import ModelError

    device = requested.strip().lower()
    if device in ("", "auto"):
        return pick_device()
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", device)
    if not match or (match.group(2) and match.group(1) != "cuda"):
        raise ModelError(f"--device {requested!r} is not a device; use cuda, cuda:N, mps or cpu (or leave it out)")
    kind, number = match.group(1), match.group(2)
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ModelError(f"--device {requested}: this machine has no CUDA GPU that torch can use "
                             f"(torch {torch.__version__}); use --device cpu, or leave --device out")
        if number is not None and int(number) >= count:
            raise ModelError(f"--device {requested}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
                             f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if kind == "mps" and not _mps_available(torch):
        raise ModelError(f"--device {requested}: Apple's MPS is not available here; use --device cpu")
    return device


def pick_dtype(device: str, requested: str | None = None) -> str:
    """bf16 on CUDA (fp16 on GPUs without native bf16) and MPS, float32 on CPU (CPU bf16 matmuls are slow)."""
    if requested and requested != "auto":
        if requested not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, not {requested!r}")
        return requested
    if device.startswith("cuda"):
        return "bfloat16" if _native_bf16(device) else "float16"
    if device == "mps":
        return "bfloat16"
    return "float32"


def _native_bf16(device: str) -> bool:
    """Whether this CUDA device (`cuda:1`: that one, not the current one) computes in bfloat16 in hardware: Ampere
    and later, and AMD's GPUs under ROCm. torch's `is_bf16_supported()` also says yes where bf16 is only emulated
    (a T4, a V100: slow), so fp16 was never chosen."""
    import torch

    if torch.version.hip:
        return True
    index = torch.device(device).index
    return torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).major >= 8


def system_memory() -> tuple[float, float]:
    """(total, available) RAM in bytes."""
    try:
        import psutil

        mem = psutil.virtual_memory()
        return float(mem.total), float(mem.available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return float(pages * size), float(pages * size) * 0.5


def free_swap() -> float:
    """Free swap in bytes (0 if unknown)."""
    try:
        import psutil

        return float(psutil.swap_memory().free)
    except (ImportError, RuntimeError, OSError):  # pragma: no cover - psutil is a dependency
        return 0.0


def device_memory(device: str) -> DeviceMemory:
    """What the model can use on `device`: a CUDA GPU's free memory (plus what this process's torch holds),
    ~70 % of a Mac's RAM, or free RAM."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        # What this process's torch holds (the model, once loaded; its cached blocks) is the model's to use:
        # the estimates count the weights, so a plan made after the load must not count them twice.
        held = torch.cuda.memory_reserved(index)
        return DeviceMemory("cuda", torch.cuda.get_device_name(index), float(total), float(free + held))
    total, available = system_memory()
    if device == "mps":  # unified memory; macOS lets the GPU use about 70-75 % of it
        return DeviceMemory("mps", "Apple GPU", total, min(available, 0.7 * total))
    return DeviceMemory("cpu", "CPU", total, available)


def default_context_budget(
    shape: ModelShape, memory: DeviceMemory, *, dtype: str = "bfloat16", quantize: str | None = None
) -> tuple[int, str | None]:
    """The most tokens one prompt (with its answer) may hold here, and a warning if the model does not fit.

    It is the largest count whose estimated peak stays within 90 % of the available memory, never more
    than the model's window.
    """
    usable = 0.9 * memory.available
    if peak_bytes(shape, MIN_CONTEXT, dtype=dtype, quantize=quantize) > usable:
        need = peak_bytes(shape, MIN_CONTEXT, dtype=dtype, quantize=quantize)
        hint = "use --quantize 4bit on a CUDA GPU, " if memory.device == "cuda" and not quantize else ""
        smaller = "" if shape.name.endswith(("E2B-it", "E4B-it")) else "pick a smaller model (--model " \
            "google/gemma-4-E4B-it) or "
        # The peak is held to 90 % of what is free: "needs 28 GB" beside "30 GB available" read as a contradiction.
        return FALLBACK_CONTEXT, (
            f"{shape.name} needs about {need / 0.9 / GB:.0f} GB free ({need / GB:.0f} GB at its peak, {dtype}"
            f"{', ' + quantize if quantize else ''}, with a {MIN_CONTEXT:,}-token prompt, and a tenth to spare) and "
            f"{memory.name} has {memory.available / GB:.0f} GB available: {hint}{smaller}run on a bigger machine; "
            f"planning with {FALLBACK_CONTEXT} tokens"
        )
    lo, hi = MIN_CONTEXT, shape.context_window
    while lo < hi:  # the peak grows with the tokens: bisect
        mid = (lo + hi + 1) // 2
        if peak_bytes(shape, mid, dtype=dtype, quantize=quantize) <= usable:
            lo = mid
        else:
            hi = mid - 1
    return lo // 1024 * 1024 if lo >= 2048 else lo, None


def default_batch_size(
    shape: ModelShape, memory: DeviceMemory, tokens: int, *, dtype: str = "bfloat16", quantize: str | None = None
) -> int:
    """Requests of `tokens` per batch (transcription clips, or notes requests): as many as fit (at most 64 on a
    GPU, 4 on a CPU)."""
    cap = 4 if memory.device == "cpu" else 64
    usable = 0.9 * memory.available
    batch = 1
    while batch < cap and peak_bytes(shape, tokens, batch=batch * 2, dtype=dtype, quantize=quantize) <= usable:
        batch *= 2
    return min(batch, cap)
