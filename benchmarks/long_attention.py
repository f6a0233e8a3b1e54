"""Attention variants for the long notes prefill, an experiment for issue 7's 256 k-token target.

The prompt goes through the model in chunks (8 k tokens); what differs is how the global (full-attention)
layers attend: a chunk of queries against everything before it. The sliding-window layers keep transformers'
sdpa path in every variant.

- `sdpa`: transformers' default, a dense chunk x context mask (DESIGN.md: 262 k tokens in 158 s on an H100,
  against a ~21 s compute floor).
- `lower-right`: sdpa with a lower-right causal bias instead of the mask, which may reach a fused kernel.
- `flex`: torch's flex attention, compiled, over a static K/V buffer of the whole prompt's length, with a
  block mask that skips the blocks past the chunk (so the buffer's empty tail costs nothing) and Triton blocks
  small enough for the global layers' head dim of 512 (transformers' own flex path fails to compile there with
  the default blocks: DESIGN.md). One shape for every chunk, so it compiles once.

Each variant registers an attention function with transformers; `CACHES[variant]` says which cache it needs.
"""

from __future__ import annotations

import warnings
from typing import Any

# Triton blocks tried in order for flex attention on CUDA: the first that compiles is kept. With head dim 512 a
# 64 x 32 tile in two stages needs about 192 KB of shared memory (an H100 has 228 KB); the default 3 stages does
# not fit.
FLEX_KERNEL_OPTIONS = (
    {"BLOCK_M": 64, "BLOCK_N": 32, "num_stages": 2, "num_warps": 4},
    {"BLOCK_M": 32, "BLOCK_N": 32, "num_stages": 1, "num_warps": 4},
    {"BLOCK_M": 16, "BLOCK_N": 16, "num_stages": 1, "num_warps": 2},
)
VARIANTS = ("sdpa", "lower-right", "flex")
CACHES = {"sdpa": "dynamic", "lower-right": "dynamic", "flex": "static"}


def _is_global_prefill(module: Any, query: Any) -> bool:
    return getattr(module, "sliding_window", None) is None and query.shape[0] == 1 and query.shape[2] > 1


def _sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def lower_right_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """sdpa, but a global layer of one unpadded sequence uses a lower-right causal bias, not the dense mask."""
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    if _is_global_prefill(module, query):
        bias = causal_lower_right(query.shape[2], key.shape[2])
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=bias, scale=scaling, enable_gqa=key.shape[1] != query.shape[1]
        )
        return out.transpose(1, 2).contiguous(), None
    return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


class FlexGlobal:
    """Global layers through compiled flex attention over a static K/V buffer (see the module's doc).

    The chunk's first position comes from `position_ids` (a text-only prompt: positions are cache positions);
    the block mask is made once per chunk and shared by all global layers of that forward.
    """

    def __init__(self) -> None:
        self.offset = None  # the chunk's first position, a device tensor the mask reads
        self._causal = None
        self.flex = None
        self.options = None  # the kernel options that compiled, on CUDA
        self._mask_for: Any = None  # (position_ids, q_len, kv_len) of the mask held: all global layers of a forward
        self._mask: Any = None
        self.calls = 0

    def _block_mask(self, query, key, position_ids):
        import torch
        from torch.nn.attention.flex_attention import create_block_mask

        q_len, kv_len = query.shape[2], key.shape[2]
        # The same position_ids tensor goes to every layer of one forward. It is kept (not its id(): a freed
        # tensor's id can come back for the next chunk's positions, which would reuse a stale mask).
        held = self._mask_for
        if held is None or held[0] is not position_ids or held[1:] != (q_len, kv_len):
            if self.offset is None or self.offset.device != query.device:
                # One mask function for every chunk (a new closure each time could recompile the compiled
                # block-mask maker); it reads the chunk's offset from this tensor.
                offset = self.offset = torch.zeros((), dtype=torch.long, device=query.device)

                def causal(b, h, q_idx, kv_idx):
                    return q_idx + offset >= kv_idx

                self._causal = causal
            self.offset.copy_(position_ids.reshape(-1)[0])
            self._mask = create_block_mask(self._causal, None, None, q_len, kv_len, device=query.device,
                                           _compile=query.device.type == "cuda")
            self._mask_for = (position_ids, q_len, kv_len)
        return self._mask

    def _run(self, query, key, value, block_mask, scaling):
        import torch
        from torch.nn.attention.flex_attention import flex_attention

        gqa = key.shape[1] != query.shape[1]
        if query.device.type != "cuda":  # the CPU checks the numbers, not the speed: eager flex attention
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "flex_attention called without torch.compile" (on purpose)
                return flex_attention(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=gqa)
        if self.flex is None:
            self.flex = torch.compile(flex_attention, dynamic=False, fullgraph=True)
        tried = [self.options] if self.options is not None else list(FLEX_KERNEL_OPTIONS)
        errors = []
        for options in tried:
            try:
                out = self.flex(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=gqa,
                                kernel_options=options)
            except Exception as exc:  # noqa: BLE001 - a Triton config that does not fit: try the next
                errors.append(f"{options}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
                continue
            self.options = options
            return out
        raise RuntimeError("flex attention compiled with none of the kernel options: " + " | ".join(errors))

    def __call__(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        position_ids = kwargs.get("position_ids")
        if _is_global_prefill(module, query) and position_ids is not None:
            self.calls += 1
            block_mask = self._block_mask(query, key, position_ids)
            out = self._run(query, key, value, block_mask, scaling)
            return out.transpose(1, 2).contiguous(), None
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


FLEX = FlexGlobal()


def register(variant: str) -> str:
    """The attn_implementation name to set on the text model for `variant`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if variant not in VARIANTS:
        raise ValueError(f"unknown long-prefill attention {variant!r}; one of {', '.join(VARIANTS)}")
    if variant == "sdpa":
        return "sdpa"
    name = "g4_" + variant.replace("-", "_")
    AttentionInterface.register(name, lower_right_attention if variant == "lower-right" else FLEX)
    AttentionMaskInterface.register(name, sdpa_mask)  # the sliding layers' masks, as with sdpa
    return name


def prefill_cache(variant: str, text_config: Any, tokens: int) -> Any:
    """The cache a long prefill of `tokens` fills for `variant`: dynamic, or static with the whole length."""
    from transformers import DynamicCache, StaticCache

    if CACHES[variant] == "static":
        return StaticCache(config=text_config, max_cache_len=tokens)
    return DynamicCache(config=text_config)
