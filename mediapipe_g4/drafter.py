"""Gemma 4's MTP drafter (the `-assistant` checkpoints) for speculative decoding.

transformers 5.23 cannot draft with a Gemma 4 drafter as shipped; two things are mended here:

1. A drafter has no K/V of its own: every layer reads the target's (`num_kv_shared_layers ==
   num_hidden_layers`). The text config's `kv_sharing_modes` raises for that case ("The set of layer types
   producing a cache is different than the set of layer types using them"), so the drafter cannot even be
   built. `load_drafter` builds it with that one case answered (every layer "reuse"); the property is only
   read while the layers are made.
2. The drafter reads the K/V of the target's last layer of each attention type from `shared_kv_states`.
   transformers marks those layers only in targets that share K/V themselves (E2B, E4B); a target without
   (the 12B: `num_kv_shared_layers` 0) returns an empty dict and drafting fails with KeyError 'full_attention'.
   `share_kv_with_drafter` marks them, as transformers does for the others (a reference kept per forward).

With greedy decoding, output with the drafter is token for token the output without it (tested on a
tiny random pair); only the speed changes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .errors import ModelError

# Tokens drafted per round when the checkpoint's generation config does not say (transformers would fail on
# None). 4-8 is what was reported to work for the larger Gemma 4 targets.
DEFAULT_DRAFT_TOKENS = 4

DRAFTER_CLASSES = ("Gemma4AssistantForCausalLM", "Gemma4UnifiedAssistantForCausalLM")


@contextlib.contextmanager
def all_shared_layers_allowed():
    """While this runs, a Gemma 4 text config whose every layer shares K/V says so instead of raising."""
    from transformers import Gemma4TextConfig, Gemma4UnifiedTextConfig

    saved = {cls: cls.__dict__["kv_sharing_modes"] for cls in (Gemma4TextConfig, Gemma4UnifiedTextConfig)}

    def mended(original):
        def kv_sharing_modes(self):
            if self.num_kv_shared_layers == self.num_hidden_layers:
                return ["reuse"] * self.num_hidden_layers
            return original.fget(self)
        return property(kv_sharing_modes)

    for cls, original in saved.items():
        cls.kv_sharing_modes = mended(original)
    try:
        yield
    finally:
        for cls, original in saved.items():
            cls.kv_sharing_modes = original


def load_drafter(source: str, *, dtype: Any, device: str, local_files_only: bool) -> Any:
    """A drafter checkpoint (Hub id or folder) on `device`, ready for generate(assistant_model=...)."""
    from transformers import AutoModelForCausalLM

    with all_shared_layers_allowed():
        drafter = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, local_files_only=local_files_only, device_map={"": device})
    return prepare_drafter(drafter)


def prepare_drafter(drafter: Any) -> Any:
    """Eval mode, and a draft length when the checkpoint sets none."""
    if getattr(drafter.generation_config, "num_assistant_tokens", None) is None:
        drafter.generation_config.num_assistant_tokens = DEFAULT_DRAFT_TOKENS
    return drafter.eval()


def is_mtp_drafter(drafter: Any) -> bool:
    return type(drafter).__name__ in DRAFTER_CLASSES


def check_pair(drafter: Any, target_config: Any, names: tuple[str, str]) -> None:
    """A clear error when the drafter was made for another target (its input is the target's hidden state)."""
    expected = getattr(drafter.config, "backbone_hidden_size", None)
    hidden = target_config.get_text_config().hidden_size
    if expected is not None and expected != hidden:
        raise ModelError(f"the drafter {names[0]} was made for a model with hidden size {expected}, but "
                         f"{names[1]} has {hidden}: use the drafter published with that model "
                         "(e.g. google/gemma-4-12B-it-assistant for google/gemma-4-12B-it)")


def share_kv_with_drafter(model: Any) -> list[int]:
    """Mark the target's last layer of each attention type to hand its K/V to the drafter; their indices."""
    text_config = model.config.get_text_config()
    layer_types = list(text_config.layer_types)
    layers = _decoder_layers(model)
    marked = []
    for kind in sorted(set(layer_types)):
        index = max(i for i, t in enumerate(layer_types) if t == kind)
        attention = layers[index].self_attn
        if not getattr(attention, "is_kv_shared_layer", False):
            attention.store_full_length_kv = True
            marked.append(index)
    return marked


def _decoder_layers(model: Any) -> Any:
    for path in ("model.language_model.layers", "model.layers", "language_model.layers"):
        found: Any = model
        for name in path.split("."):
            found = getattr(found, name, None)
            if found is None:
                break
        else:
            return found
    raise ModelError(f"cannot find the decoder layers of {type(model).__name__} to share K/V with the drafter")


# --------------------------------------------------------------------------- random drafters (tests, benchmarks)


def drafter_config(target_config: Any, *, hidden: int, intermediate: int, layers: int = 4) -> Any:
    """The config of a drafter for `target_config`: its own sizes, the target's attention shapes (it reads the
    target's K/V: same heads, head dims, K = V, window) and, like the published drafters, sliding layers then
    one global layer, no final soft-capping, and every layer sharing K/V."""
    from transformers import Gemma4AssistantConfig, Gemma4UnifiedAssistantConfig

    text = target_config.get_text_config().to_dict()
    types = text["layer_types"]
    per_layer = text.get("per_layer_config") or {}
    global_override = next((v for k, v in per_layer.items() if types[int(k)] == "full_attention"), {})
    keep = ("model_type", "num_attention_heads", "num_key_value_heads", "head_dim", "attention_k_eq_v",
            "sliding_window", "vocab_size", "rope_parameters", "rms_norm_eps", "hidden_activation",
            "max_position_embeddings")
    draft_text = {k: text[k] for k in keep if k in text}
    draft_text.update(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
        per_layer_config={str(layers - 1): global_override} if global_override else {},
        num_kv_shared_layers=layers, final_logit_softcapping=None,
    )
    unified = text["model_type"] == "gemma4_unified_text"
    cls = Gemma4UnifiedAssistantConfig if unified else Gemma4AssistantConfig
    if not unified:  # the E2B/E4B family's per-layer inputs and MoE are target-only
        draft_text.update(hidden_size_per_layer_input=0, vocab_size_per_layer_input=0)
    return cls.from_dict({"model_type": cls.model_type, "backbone_hidden_size": text["hidden_size"],
                          "text_config": draft_text})


def random_drafter(target_config: Any, *, hidden: int, intermediate: int, layers: int = 4) -> Any:
    """A drafter with random weights for `target_config` (its speed is real; its drafts are noise)."""
    from transformers import AutoModelForCausalLM

    with all_shared_layers_allowed():
        drafter = AutoModelForCausalLM.from_config(
            drafter_config(target_config, hidden=hidden, intermediate=intermediate, layers=layers))
    return prepare_drafter(drafter)
