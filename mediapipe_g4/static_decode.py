"""Decoding with a static KV cache and torch.compile: one compiled step per (batch, cache length) bucket, and
as few buckets as possible (a batch takes a compiled one that holds it: tracing a shape costs seconds per process).

transformers' default DynamicCache decodes launch-bound: 97.5 ms a step at batch 1 for the 12B on an H100,
against about 7 ms of memory traffic (DESIGN.md). A static cache gives the decode step fixed shapes, so
torch.compile can fuse it and capture it in CUDA graphs ("reduce-overhead").

transformers' own StaticCache keeps sliding-window layers as rolling buffers whose fill level is a Python
int; a compiled step is specialised on it, so it recompiles as the request grows (and CUDA graphs re-record).
Here the sliding layers keep the whole request instead and the sliding-window attention mask does the
windowing: nothing in the step depends on a Python int, and it compiles once per bucket. That costs memory
only past the window (1024 tokens for the 12B), so a batch takes this path when its cache and a one-shot
prefill fit in free memory; the rest (long notes prompts) decode with the dynamic cache, prefilled in chunks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from .memory import ModelShape, device_memory, dtype_bytes, prefill_workspace
from .workdir import cache_root

log = logging.getLogger("mediapipe_g4")

COMPILE_BACKEND = "inductor"  # tests use "eager": the same tracing, no kernel compilation
RECOMPILE_LIMIT = 64  # buckets are few; past dynamo's default of 8 it would fall back to eager silently
HEADROOM = 0.85  # of the free memory, for the cache and the prefill's activations
# A shape compiled before serves a batch whose own shape is not compiled yet when it is at most this many times
# as wide (copies pad the batch) and as long: tracing a new shape costs seconds per process (~0.26 s a layer with
# the kernels on disk, ~1.5 s a layer without, on 2 CPU cores), more than a few padded rows or masked slots.
REUSE_BATCH, REUSE_LENGTH = 4, 2


def length_bucket(tokens: int) -> int:
    """The cache length for `tokens`: 1024, 1536, 2048, 3072, 4096, 6144 ... (two steps an octave)."""
    size = 1024
    while True:
        for bucket in (size, size * 3 // 2):
            if tokens <= bucket:
                return bucket
        size *= 2


def batch_bucket(count: int, largest: int | None = None) -> int:
    """The batch a group of `count` requests is padded to: the next power of two, at most `largest`."""
    bucket = 1
    while bucket < count:
        bucket *= 2
    return max(count, min(bucket, largest or bucket))


def flat_cache_bytes(shape: ModelShape, tokens: int, batch: int, dtype: str) -> float:
    """The static cache's size: every layer that keeps keys and values holds all `tokens`."""
    per_token = sum(2 * heads * dim for heads, dim in zip(shape.kv_heads, shape.head_dims))
    return float(per_token * tokens * batch * dtype_bytes(dtype))


def flat_static_cache(text_config: Any, max_cache_len: int) -> Any:
    """A StaticCache whose sliding-window layers hold the whole request (see the module's docstring)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer, StaticSlidingWindowLayer

    cache = StaticCache(config=text_config, max_cache_len=max_cache_len)
    cache.layers = [StaticLayer(max_cache_len=max_cache_len) if isinstance(layer, StaticSlidingWindowLayer)
                    else layer for layer in cache.layers]
    return cache


@dataclass(frozen=True)
class StaticBatch:
    """How one batch decodes on the static path."""

    batch: int  # requests, padded up to a bucket
    cache_len: int  # prompt + answer, rounded up to a bucket


class StaticDecoder:
    """Chooses the static path per batch and holds its cache (one at a time) and compile settings."""

    def __init__(self, model: Any, shape: ModelShape, device: str, dtype: str, largest_batch: int | None = None):
        self.text_config, self.shape = model.config.get_text_config(decoder=True), shape
        self.device, self.dtype = device, dtype
        self.largest_batch = largest_batch  # None: no cap beyond the memory check
        self._cache_key: tuple[int, int] | None = None
        self._cache: Any = None
        self.batches = 0  # batches decoded on this path (a benchmark checks the path was taken)
        self._compiled: set[tuple[int, int]] = set()
        import torch

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        # Compiled kernels outlive a reboot in g4media's cache (torch's default is /tmp/torchinductor_$USER).
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "torch-compile"))
        skip_vision_overlay_when_decoding(model)

    def plan(self, count: int, prompt_tokens: int, max_new_tokens: int, *, reuse: bool = True) -> StaticBatch | None:
        """The static batch for `count` requests of `prompt_tokens` (padded) each, if it fits in free memory:
        a shape compiled before that holds them (`reuse`), else their own bucket."""
        own = StaticBatch(batch_bucket(count, self.largest_batch), length_bucket(prompt_tokens + max_new_tokens))
        if own.cache_len > self.shape.context_window:
            return None
        shapes = [own]
        if reuse and (own.batch, own.cache_len) not in self._compiled:
            shapes[:0] = sorted((StaticBatch(b, n) for b, n in self._compiled
                                 if own.batch <= b <= REUSE_BATCH * own.batch
                                 and own.cache_len <= n <= REUSE_LENGTH * own.cache_len),
                                key=lambda s: (s.batch * s.cache_len, (s.batch, s.cache_len) != self._cache_key))
        for shape in shapes:
            if self._fits(shape, prompt_tokens):
                if shape != own:
                    log.debug("static decode: %d x %d tokens on the compiled %d x %d shape", own.batch,
                              own.cache_len, shape.batch, shape.cache_len)
                return shape
        return None

    def _fits(self, static: StaticBatch, prompt_tokens: int) -> bool:
        batch, cache_len = static.batch, static.cache_len
        need = prefill_workspace(self.shape, prompt_tokens, prompt_tokens, self.dtype, batch=batch)
        free = free_memory(self.device)
        if self._cache_key != (batch, cache_len):  # a new cache, in place of the one held now (if any)
            need += flat_cache_bytes(self.shape, cache_len, batch, self.dtype)
            free += self._cache_bytes()
        if need > HEADROOM * free:
            log.debug("static decode: %d x %d tokens needs %.1f GB of %.1f GB free", batch, cache_len,
                      need / 2**30, free / 2**30)
            return False
        return True

    def fitting_batch(self, count: int, prompt_tokens: int, max_new_tokens: int) -> int:
        """The largest batch, at most `count`, whose static cache fits (halving); `count` if none does
        (those requests decode with the dynamic cache)."""
        batch = count
        while self.plan(batch, prompt_tokens, max_new_tokens) is None:
            if batch == 1:
                return count
            batch = batch_bucket(batch) // 2
        return batch

    def generate_kwargs(self, static: StaticBatch) -> dict[str, Any]:
        """What `model.generate` takes to decode `static`: the (reset) cache and the compile settings."""
        from transformers import CompileConfig

        key = (static.batch, static.cache_len)
        self.batches += 1
        if key not in self._compiled:
            self._compiled.add(key)
            log.info("compiling the decoder for %d x %d tokens (once per shape; kernels are cached in %s)",
                     static.batch, static.cache_len, os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's cache"))
        if self._cache_key != key:
            self.release()
            self._cache = flat_static_cache(self.text_config, static.cache_len)
            self._cache_key = key
        else:
            self._cache.reset()
        # reduce-overhead: CUDA graphs, the point on a GPU; elsewhere plain inductor kernels
        mode = "reduce-overhead" if self.device.startswith("cuda") and COMPILE_BACKEND == "inductor" else None
        config = CompileConfig(fullgraph=False, dynamic=False, backend=COMPILE_BACKEND, mode=mode)
        config._compile_all_devices = True  # transformers compiles on CUDA only unless told (CPU tests, MPS)
        return {"past_key_values": self._cache, "compile_config": config}

    @property
    def compiled(self) -> frozenset[tuple[int, int]]:
        """The (batch, cache length) shapes compiled in this process."""
        return frozenset(self._compiled)

    def release(self) -> None:
        self._cache = self._cache_key = None

    def _cache_bytes(self) -> float:
        if self._cache_key is None:
            return 0.0
        batch, cache_len = self._cache_key
        return flat_cache_bytes(self.shape, cache_len, batch, self.dtype)


def skip_vision_overlay_when_decoding(model: Any) -> None:
    """Make the masks of a decoding step without the image/video overlay, which cannot change them.

    With a static cache, transformers builds each step's attention masks outside the compiled graph, and
    Gemma 4 adds a bidirectional overlay for image and video tokens whenever `mm_token_type_ids` is passed;
    it goes through `vmap` and was half of a step's host time in a profile. A decoded token is text, so
    the overlay is a no-op for a one-token query, as it is for a prompt without images; other prompts
    keep it.
    """
    make_masks = getattr(model, "create_masks_for_generate", None)
    if make_masks is None or getattr(make_masks, "skips_overlay_when_decoding", False):
        return

    def masks(*args: Any, **kwargs: Any) -> Any:
        embeds, types = kwargs.get("inputs_embeds"), kwargs.get("mm_token_type_ids")
        if embeds is not None and types is not None and (
                embeds.shape[1] == 1 or not bool(((types == 1) | (types == 2)).any())):  # 1, 2: image, video
            kwargs["mm_token_type_ids"] = None
        return make_masks(*args, **kwargs)

    masks.skips_overlay_when_decoding = True  # type: ignore[attr-defined]
    model.create_masks_for_generate = masks


def free_memory(device: str) -> float:
    """Bytes a new allocation can use on `device`: what the model may use there (memory.device_memory: on
    CUDA, free memory plus what this process's torch holds) less what torch has allocated (the weights)."""
    available = device_memory(device).available
    if device.startswith("cuda"):
        import torch

        available -= torch.cuda.memory_allocated(torch.device(device).index or 0)
    return available
