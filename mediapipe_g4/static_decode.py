"""Decoding with a static KV cache and torch.compile: one compiled step per (batch, cache length) bucket, and
as few buckets as possible (a batch takes a compiled one that holds it: tracing a shape costs seconds per process).

transformers' default DynamicCache decodes launch-bound: 97.5 ms a step at batch 1 for the 12B on an H100,
against about 7 ms of memory traffic (DESIGN.md). A static cache gives the decode step fixed shapes, so
torch.compile can fuse it and capture it in CUDA graphs ("reduce-overhead").

transformers' own StaticCache keeps sliding-window layers as rolling buffers whose fill level is a Python
int; a compiled step is specialised on it, so it recompiles as the request grows (and CUDA graphs re-record),
and once full it shifts the whole window each step (two copies of it per layer). Here a sliding layer is a
ring (`RingLayer`): position p is written to slot p % window at a tensor index, nothing is moved, and the
step attends to the window's slots in ring order; the mask, built outside the compiled step where the
position is a Python int, is the window's mask in that order (`ring_mask`). Nothing in the step depends on a
Python int, so it compiles once per bucket, and a step reads the window, not the request: for the 12B's
notes of a 30-minute meeting (16 k-token cache) 0.3 GB of sliding-layer keys and values a step instead of
5 GB. The cache's size is the dynamic cache's (`ModelShape.kv_bytes`). The global layers (`PrefixLayer`)
hold the whole bucket; their prefill attends over the prompt's slots only, a step over all of them, masked.
A batch takes this path when its cache and its prefill fit in free memory: at once, or for a long prompt in
chunks (8 k tokens), uncompiled, into the same cache (`StaticBatch.chunk`; the engine then continues from the
cache, compiled); the rest decode with the dynamic cache.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
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
# A batch of one compiles a shape this many times its length: a longer request of one follows (the notes after
# the names: about the same prompt, but 4096 answer tokens against 400) and then takes the same shape. Slack
# costs one row little with ring sliding layers: the 12B's global layers read 16 KB a token of cache, so 3 x 8 k
# tokens of slack are 0.4 GB a step (~1.6 % of the weights, ~0.1 ms on an H100), against a trace of seconds.
RESERVE_ONE = 4


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


def static_cache(text_config: Any, max_cache_len: int) -> Any:
    """A StaticCache whose sliding-window layers are rings and whose global layers' prefill attends to the prompt
    only (see the module's docstring)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer, StaticSlidingWindowLayer

    ring, prefix = layer_classes()
    cache = StaticCache(config=text_config, max_cache_len=max_cache_len)
    cache.layers = [ring(layer.max_cache_len) if isinstance(layer, StaticSlidingWindowLayer)
                    else prefix(layer.max_cache_len) if type(layer) is StaticLayer else layer
                    for layer in cache.layers]
    return cache


@functools.cache
def layer_classes() -> tuple[type, type]:
    """The ring (sliding) and prefix (global) cache layer classes; built on first use, as transformers is
    imported lazily."""
    import torch
    from transformers.cache_utils import StaticLayer

    class PrefilledLayer(StaticLayer):
        """A static layer that counts what its prefill chunks wrote: `prefilled`, a bool constant while decoding
        (compiled code reads it), and `length`, a Python int read outside compiled code only (a compiled step
        that read it would be specialised on each prompt's length)."""

        def __init__(self, max_cache_len: int):
            super().__init__(max_cache_len=max_cache_len)
            self.prefilled, self.length = False, 0

        def decoding(self, count: int) -> bool:
            """Whether `count` new tokens are a decoding step (one token after a prefill) or a prefill chunk."""
            return count == 1 and self.prefilled

        def reset(self) -> None:
            super().reset()
            self.prefilled, self.length = False, 0

    class PrefixLayer(PrefilledLayer):
        """A global layer's keys and values, all `max_cache_len` slots. A prefill chunk (uncompiled) attends over
        the slots written so far, not the whole buffer (a quarter of the work when the buffer is twice the
        prompt); a decoding step over the whole buffer (fixed shapes), masked."""

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            keys, values = super().update(key_states, value_states, *args, **kwargs)
            if self.decoding(key_states.shape[-2]):
                return keys, values
            self.length += key_states.shape[-2]
            self.prefilled = True
            return keys[:, :, :self.length], values[:, :, :self.length]

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return (self.max_cache_len, 0) if self.decoding(query_length) else (self.length + query_length, 0)

    class RingLayer(PrefilledLayer):
        """A sliding-window layer's keys and values in `window` slots: position p lives in slot p % window.

        A prefill chunk (uncompiled) attends over the window before it (the ring in position order) and itself,
        with the usual sliding mask, and leaves its last `window` tokens in their slots; a decoding step writes
        one token at the slot its tensor position gives and returns the ring, which `ring_mask` masks."""

        is_sliding = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            count, window = key_states.shape[-2], self.max_cache_len
            if self.decoding(count):
                slot = (self.cumulative_length % window).view(1)
                self.keys.index_copy_(2, slot, key_states)
                self.values.index_copy_(2, slot, value_states)
                self.cumulative_length.add_(1)
                return self.keys, self.values
            keys, values, past = key_states, value_states, self.length  # a Python int: prefill only
            if past:  # the window before the chunk, oldest first: slots [0, past), or the ring from slot past % window
                before = [self.keys[:, :, :past], self.values[:, :, :past]] if past <= window else \
                    [torch.roll(held, -(past % window), dims=2) for held in (self.keys, self.values)]
                keys, values = torch.cat((before[0], key_states), dim=2), torch.cat((before[1], value_states), dim=2)
            kept = min(count, window)
            slots = torch.arange(past + count - kept, past + count, device=self.device) % window
            self.keys.index_copy_(2, slots, key_states[:, :, count - kept:])
            self.values.index_copy_(2, slots, value_states[:, :, count - kept:])
            self.cumulative_length.add_(count)
            self.length += count
            self.prefilled = True
            return keys, values

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            if self.decoding(query_length):  # the ring's slots (ring_mask replaces the mask)
                return self.max_cache_len, 0
            past, window = self.length, self.max_cache_len
            return min(past, window) + query_length, max(0, past - window)

    return RingLayer, PrefixLayer


def ring_mask(ring: Any, attention_mask: Any, like: Any = None) -> Any:
    """The sliding layers' mask for one decoding step on a ring cache (batch x 1 x 1 x window) whose sliding
    layers are like `ring` (one of them, prefilled), typed as `like` (transformers' mask for the step: boolean,
    or additive floats), boolean without it.

    The token decoded now is at position q: the 2-D padding mask's length - 1 (generate grows it a column a
    step), or without one (no padding) the ring's count of tokens written. After its write, slot j holds
    position q - ((q - j) mod window), the window (q - window, q]; a slot is attended when that position
    exists (>= 0) and is not left padding."""
    import torch

    window = ring.max_cache_len
    query = attention_mask.shape[-1] - 1 if attention_mask is not None else int(ring.cumulative_length)
    slots = torch.arange(window, device=ring.device)
    held = query - torch.remainder(query - slots, window)
    keep = (held >= 0)[None, None, None, :]
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, None, held.clamp(min=0)]
    if like is not None:
        keep = keep.expand(like.shape[0], 1, 1, window)
    if like is None or like.dtype == torch.bool:
        return keep
    return torch.where(keep, torch.zeros((), dtype=like.dtype, device=like.device), torch.finfo(like.dtype).min)


@dataclass(frozen=True)
class StaticBatch:
    """How one batch decodes on the static path."""

    batch: int  # requests, padded up to a bucket
    cache_len: int  # prompt + answer, rounded up to a bucket
    chunk: int | None = None  # prefill in chunks of this many tokens (a one-shot prefill does not fit), or at once


class StaticDecoder:
    """Chooses the static path per batch and holds its cache (one at a time) and compile settings."""

    def __init__(self, model: Any, shape: ModelShape, device: str, dtype: str, largest_batch: int | None = None,
                 prefill_chunk: int | None = None):
        self.text_config, self.shape = model.config.get_text_config(decoder=True), shape
        self.device, self.dtype = device, dtype
        self.largest_batch = largest_batch  # None: no cap beyond the memory check
        self.prefill_chunk = prefill_chunk  # None: prompts prefill at once, or take the dynamic path
        self._cache_key: tuple[int, int] | None = None
        self._cache: Any = None
        self.batches = 0  # batches decoded on this path (a benchmark checks the path was taken)
        self._compiled: set[tuple[int, int]] = set()
        import torch

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        # Compiled kernels outlive a reboot in g4media's cache (torch's default is /tmp/torchinductor_$USER).
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "torch-compile"))
        static_step_masks(model)
        packed_decode_attention()

    def plan(self, count: int, prompt_tokens: int, max_new_tokens: int, *, reuse: bool = True) -> StaticBatch | None:
        """The static batch for `count` requests of `prompt_tokens` (padded) each, if it fits in free memory: the
        compiled shape with the least work that holds them (`reuse`), else their own bucket (for a batch of one,
        `RESERVE_ONE` times as long, or if that does not fit, its own length). A prompt whose one-shot prefill does
        not fit is prefilled in chunks (`StaticBatch.chunk`) when those fit."""
        batch, need = batch_bucket(count, self.largest_batch), length_bucket(prompt_tokens + max_new_tokens)
        if need > self.shape.context_window:
            return None
        wanted = min(length_bucket(need * RESERVE_ONE), self.shape.context_window) if batch == 1 and reuse else need
        own = [StaticBatch(batch, n) for n in dict.fromkeys((wanted, need))]
        shapes = own
        if reuse:
            compiled = sorted((StaticBatch(b, n) for b, n in self._compiled
                               if batch <= b <= REUSE_BATCH * batch and need <= n <= REUSE_LENGTH * wanted),
                              key=lambda s: (s.batch * s.cache_len, (s.batch, s.cache_len) != self._cache_key))
            shapes = compiled + [s for s in own if s not in compiled]
        chunks = [None] + [self.prefill_chunk] * bool(self.prefill_chunk and prompt_tokens > self.prefill_chunk)
        for shape, chunk in itertools.product(shapes, chunks):
            if not self._fits(shape, prompt_tokens, chunk or prompt_tokens):
                continue
            if shape not in own:
                log.debug("static decode: %d x %d tokens on the compiled %d x %d shape", batch, need,
                          shape.batch, shape.cache_len)
            return dataclasses.replace(shape, chunk=chunk)
        return None

    def _fits(self, static: StaticBatch, prompt_tokens: int, chunk: int) -> bool:
        batch, cache_len = static.batch, static.cache_len
        need = prefill_workspace(self.shape, chunk, prompt_tokens, self.dtype, batch=batch)
        free = free_memory(self.device)
        if self._cache_key != (batch, cache_len):  # a new cache, in place of the one held now (if any)
            need += self.shape.kv_bytes(cache_len, dtype_bytes(self.dtype), batch=batch)
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
            # The first shape of a run on a GPU is said without -v: the progress bar stands still meanwhile (about a
            # minute for the 12B the first time, seconds once its kernels are on disk) and should not look hung.
            say = log.warning if not self._compiled and self.device.startswith("cuda") else log.info
            self._compiled.add(key)
            say("compiling the decoder for %d x %d tokens: once per shape and run, about a minute the first time "
                "(the kernels are kept in %s; --no-compile skips this)", static.batch, static.cache_len,
                os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's cache"))
        if self._cache_key != key:
            self.release()
            self._cache = static_cache(self.text_config, static.cache_len)
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
        return self.shape.kv_bytes(cache_len, dtype_bytes(self.dtype), batch=batch)


def static_step_masks(model: Any) -> None:
    """Make the masks of a decoding step fit the ring cache, and without the image/video overlay.

    With a static cache, transformers builds each step's attention masks outside the compiled graph
    (`create_masks_for_generate`), so the position there is a Python int. On a ring cache (`static_cache`)
    the sliding layers' mask of a decoding step is `ring_mask`. And Gemma 4 adds a bidirectional overlay for
    image and video tokens whenever `mm_token_type_ids` is passed; it goes through `vmap` and was half of a
    step's host time in a profile. A decoded token is text, so the overlay is a no-op for a one-token query,
    as it is for a prompt without images; other prompts keep it.
    """
    from transformers import masking_utils

    # a model without its own (text-only Gemma 4) gets generate's default, wrapped
    make_masks = getattr(model, "create_masks_for_generate", masking_utils.create_masks_for_generate)
    if getattr(make_masks, "static_step_masks", False):
        return

    def masks(*args: Any, **kwargs: Any) -> Any:
        embeds, types = kwargs.get("inputs_embeds"), kwargs.get("mm_token_type_ids")
        decoding = embeds is not None and embeds.shape[1] == 1
        if embeds is not None and types is not None and (
                decoding or not bool(((types == 1) | (types == 2)).any())):  # 1, 2: image, video
            kwargs["mm_token_type_ids"] = None
        made = make_masks(*args, **kwargs)
        if decoding and isinstance(made, dict) and "sliding_attention" in made:
            ring_class = layer_classes()[0]
            ring = next((layer for layer in getattr(kwargs.get("past_key_values"), "layers", ())
                         if isinstance(layer, ring_class) and layer.prefilled), None)
            if ring is not None:
                made = {**made, "sliding_attention": ring_mask(ring, kwargs.get("attention_mask"),
                                                               made["sliding_attention"])}
        return made

    masks.static_step_masks = True  # type: ignore[attr-defined]
    model.create_masks_for_generate = masks


def packed_decode_attention() -> None:
    """transformers' sdpa attention, but a one-token query attends on the key/value heads as they are in a compiled
    step too.

    Outside torch.compile transformers folds a decoding step's query heads onto their shared key/value head
    (`pack_gqa`); inside, it copies the whole cache once per query head instead (`repeat_kv`): for the 12B's global
    layers, 16 query heads on one K/V head, 16 copies of a cache of up to 262 k tokens at every step. Here the
    compiled step packs as the plain one does (same kernel call, same answers; a prompt of more than one token, and
    everything else, goes to transformers' own function)."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations import sdpa_attention as sa

    if getattr(AttentionInterface._global_mapping.get("sdpa"), "packs_decode", False):
        return
    original = sa.sdpa_attention_forward

    def sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
             scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> Any:
        groups = getattr(module, "num_key_value_groups", 1)
        if (query.shape[2] != 1 or groups <= 1 or kwargs.get("position_bias") is not None or kwargs.get("cache")
                is not None or kwargs.get("softcap") is not None or sa.use_gqa_in_sdpa(attention_mask, key, value)):
            return original(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                            is_causal=is_causal, **kwargs)
        heads = query.shape[1]
        out = torch.nn.functional.scaled_dot_product_attention(
            sa.pack_gqa(query, groups), key, value, attn_mask=sa.pack_gqa(attention_mask, groups), dropout_p=dropout,
            scale=scaling)
        return out.reshape(out.shape[0], heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None

    sdpa.packs_decode = True  # type: ignore[attr-defined]
    AttentionInterface.register("sdpa", sdpa)


def free_memory(device: str) -> float:
    """Bytes a new allocation can use on `device`: what the model may use there (memory.device_memory: on
    CUDA, free memory plus what this process's torch holds) less what torch has allocated (the weights)."""
    available = device_memory(device).available
    if device.startswith("cuda"):
        import torch

        available -= torch.cuda.memory_allocated(torch.device(device).index or 0)
    return available
