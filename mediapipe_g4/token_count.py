"""Prompt tokens of a request, counted as the processor will count them, without the model's weights.

The processor renders the chat template, with one placeholder (`<|audio|>`, `<|image|>`) per media
part, and then replaces each placeholder with begin + N soft tokens + end. So a request's length is the
tokenized template plus, per audio clip and image, N + 1. N follows the processor's own rules:

- audio (`gemma4_unified`): one token per 640 samples (40 ms at 16 kHz), rounded up: ceil(samples / 640);
  other processors (`gemma4`'s mel + conformer) are asked through their `_compute_audio_num_tokens`.
- images: resized, aspect ratio kept, to the largest size with at most `max_soft_tokens x 9` patches of
  16 px whose sides are multiples of 48 px; N = (height / 16) x (width / 16) / 9.

Without the processor files the same arithmetic gives the media tokens, text is estimated at 4 characters
a token, and every count says it is an estimate.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from PIL import Image

from .engine import AudioPart, EngineRequest, ImagePart, TextPart
from .records import SAMPLE_RATE

AUDIO_SAMPLES_PER_TOKEN = 640  # 40 ms at 16 kHz: 25 tokens per second
PATCH_SIZE = 16
POOLING_KERNEL = 3
SOFT_TOKEN_SIZES = (70, 140, 280, 560, 1120)
CHARS_PER_TOKEN = 4.0  # the estimate for English-like text when no tokenizer is at hand
# Scripts without spaces between words, and Hangul: about a token a character; other scripts beyond Latin (Cyrillic,
# Greek, Arabic, Devanagari): about two characters a token. Four a token for them too made a Chinese meeting's
# prompts look three times smaller than they are.
_DENSE_RANGES = (r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0eff\u1780-\u17ff"
                 r"\u1000-\u109f")
_DENSE = re.compile(rf"[{_DENSE_RANGES}]")
_BEYOND_LATIN = re.compile(rf"[^\u0000-\u02ff{_DENSE_RANGES}]")
# Without a tokenizer: <bos> <|turn>user\n ... <turn|>\n <|turn>model\n <|channel>thought\n<channel|>
TEMPLATE_OVERHEAD = 13
SYSTEM_OVERHEAD = 5


def audio_tokens_for(num_samples: int) -> int:
    """Soft tokens of a clip for `gemma4_unified`: ceil(samples / 640)."""
    return -(-num_samples // AUDIO_SAMPLES_PER_TOKEN)


def image_tokens_for(height: int, width: int, max_soft_tokens: int = 280, *,
                     patch_size: int = PATCH_SIZE, pooling_kernel: int = POOLING_KERNEL) -> int:
    """Soft tokens of an image of height x width under the processor's aspect-preserving resize."""
    if max_soft_tokens not in SOFT_TOKEN_SIZES:
        raise ValueError(f"image soft tokens must be one of {SOFT_TOKEN_SIZES}, not {max_soft_tokens}")
    max_patches = max_soft_tokens * pooling_kernel**2
    target_px = max_patches * patch_size**2
    factor = math.sqrt(target_px / (height * width))
    side = pooling_kernel * patch_size
    th = math.floor(factor * height / side) * side
    tw = math.floor(factor * width / side) * side
    if th == 0 and tw == 0:
        raise ValueError(f"an image of {width}x{height} cannot be resized for the model")
    longest = (max_patches // pooling_kernel**2) * side
    if th == 0:  # a very wide image: one row of model patches
        th, tw = side, min(math.floor(width / height) * side, longest)
    elif tw == 0:  # a very tall one
        tw, th = side, min(math.floor(height / width) * side, longest)
    return (th // patch_size) * (tw // patch_size) // pooling_kernel**2


@functools.lru_cache(maxsize=4096)
def image_size(path: str) -> tuple[int, int]:
    """(height, width) as the processor will see the image: EXIF orientation applied."""
    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def estimate_text_tokens(text: str) -> int:
    """Tokens of `text` without a tokenizer, by script: a character each for CJK, kana, Hangul and Thai, two
    characters a token for other non-Latin scripts, four for the rest."""
    dense = len(_DENSE.findall(text))
    other = len(_BEYOND_LATIN.findall(text))
    return dense + math.ceil(other / 2) + math.ceil((len(text) - dense - other) / CHARS_PER_TOKEN)


class TokenCounter:
    """Counts prompt tokens exactly with a processor, or estimates them without one."""

    def __init__(self, processor: Any = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", None)
        self._templates: dict[Any, int] = {}
        image_processor = getattr(processor, "image_processor", None)
        self._patch = getattr(image_processor, "patch_size", None) or PATCH_SIZE
        self._pool = getattr(image_processor, "pooling_kernel_size", None) or POOLING_KERNEL

    @property
    def exact(self) -> bool:
        return self.processor is not None

    def audio_tokens(self, num_samples: int) -> int:
        compute = getattr(self.processor, "_compute_audio_num_tokens", None)
        if compute is not None:
            # It reads only len(); a range stands in for the samples without allocating them.
            return int(compute(range(num_samples), SAMPLE_RATE))
        return audio_tokens_for(num_samples)

    def image_tokens(self, path: str, max_soft_tokens: int) -> int:
        height, width = image_size(path)
        return image_tokens_for(height, width, max_soft_tokens, patch_size=self._patch, pooling_kernel=self._pool)

    def text_tokens(self, text: str) -> int:
        """Tokens of plain text (no template, no special tokens added)."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return estimate_text_tokens(text)

    def template_tokens(self, request: EngineRequest) -> int:
        """The rendered chat template with one placeholder token per media part."""
        key = (
            request.system,
            request.settings.enable_thinking,
            tuple(p.text if isinstance(p, TextPart) else type(p).__name__ for p in request.parts),
        )
        if key not in self._templates:
            self._templates[key] = self._render_count(request)
        return self._templates[key]

    def _render_count(self, request: EngineRequest) -> int:
        if self.processor is None:
            texts = sum(estimate_text_tokens(p.text.strip()) for p in request.parts if isinstance(p, TextPart))
            system = SYSTEM_OVERHEAD + estimate_text_tokens(request.system.strip()) if request.system else 0
            media = sum(1 for p in request.parts if not isinstance(p, TextPart))
            return TEMPLATE_OVERHEAD + system + texts + media
        prompt = self.processor.apply_chat_template(
            request.messages(with_media=False),
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=request.settings.enable_thinking,
        )
        bos = getattr(self.tokenizer, "bos_token", None)
        # The processor adds special tokens only when the template did not write <bos> itself.
        add_special = not (bos and prompt.startswith(bos))
        return len(self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])

    def count(self, request: EngineRequest) -> int:
        total = self.template_tokens(request)
        for part in request.parts:
            if isinstance(part, AudioPart):
                total += self.audio_tokens(part.num_samples) + 1  # placeholder -> begin + N + end
            elif isinstance(part, ImagePart):
                total += self.image_tokens(part.path, request.image_tokens) + 1
        return total
