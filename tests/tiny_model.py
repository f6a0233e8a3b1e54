"""Tiny Gemma 4 checkpoints with random weights, built in a second or two: `gemma4_unified` (the 12B's family)
and `gemma4` (E2B/E4B's).

They have the real models' structure where the project depends on it: the Gemma 4 special tokens, a chat
template in the Gemma 4 format (placeholders `<|audio|>`/`<|image|>`/`<|video|>` that the processor expands,
`<|turn>model\\n<|channel>thought\\n<channel|>` as the generation prompt), the family's real feature extractor,
image and video processors, audio and vision towers, and a text model with sliding-window and full-attention
layers. Their text is noise: tests check structure, never words.
"""

from __future__ import annotations

from pathlib import Path

# The Gemma 4 chat template's shape, reduced to what the project sends: system/user/model turns whose
# content is a string or a list of text/image/audio/video parts; text parts are trimmed and parts are
# joined with nothing between them, as in the published template.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set loop_messages = messages -%}"
    # As published: the system turn's content is written as it is, so a list of parts would show as its repr.
    "{%- if messages[0]['role'] in ['system', 'developer'] -%}"
    "{{- '<|turn>system\\n' -}}{{- messages[0]['content'] | trim -}}{{- '<turn|>\\n' -}}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] | trim -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|image|>' -}}"
    "{%- elif item['type'] == 'audio' -%}{{- '<|audio|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|video|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<turn|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}"
    "{%- if not enable_thinking | default(false) -%}{{- '<|channel>thought\\n<channel|>' -}}{%- endif -%}"
    "{%- endif -%}"
)

# Ids follow the real tokenizer where it matters to the code: pad 0, eos 1, bos 2; `<turn|>` also stops.
SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
    "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>",
    "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>", "<|video|>",
]  # fmt: skip

_CORPUS = [
    "Transcribe the following speech segment in English into English text.",
    "Follow these specific instructions for formatting the answer: only output the transcription.",
    "When transcribing numbers, write the digits, i.e. write 1.7 and not one point seven.",
    "Write meeting notes: summary, decisions, action items with owners, chapters and questions.",
    "The slide on screen at this moment. Speaker S1 said hello to S2 at 00:05.",
    "the quick brown fox jumps over the lazy dog 0123456789 [00:00] : , . ; ? ! ' \" ( ) { } - _",
]


def build_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        padding_side="left",
        extra_special_tokens={
            "image_token": "<|image|>",
            "boi_token": "<|image>",
            "eoi_token": "<image|>",
            "audio_token": "<|audio|>",
            "boa_token": "<|audio>",
            "eoa_token": "<audio|>",
            "video_token": "<|video|>",
            "sot_token": "<|turn>",
            "eot_token": "<turn|>",
            "soc_token": "<|channel>",
            "eoc_token": "<channel|>",
            "think_token": "<|think|>",
        },
    )


def build_tiny_checkpoint(folder: str | Path, *, seed: int = 0, family: str = "gemma4_unified") -> Path:
    """Write a tiny random checkpoint (config, weights, processor) into `folder`: `gemma4_unified` (the 12B's
    family: one sliding and one global layer, K = V on the global one) or `gemma4` (E2B/E4B's: four layers, the
    last two reusing earlier layers' K/V, per-layer inputs, and their own audio and vision towers)."""
    import torch
    from transformers import GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "head_dim": 16, "global_head_dim": 32, "sliding_window": 16, "max_position_embeddings": 8192,
            "final_logit_softcapping": 30.0, "pad_token_id": ids["<pad>"], "eos_token_id": ids["<eos>"],
            "bos_token_id": ids["<bos>"]}
    tokens = {"boi_token_id": ids["<|image>"], "eoi_token_id": ids["<image|>"], "image_token_id": ids["<|image|>"],
              "video_token_id": ids["<|video|>"], "boa_token_id": ids["<|audio>"], "eoa_token_index": ids["<audio|>"],
              "audio_token_id": ids["<|audio|>"]}
    torch.manual_seed(seed)
    model, processor_class, parts = _family(family, text, tokens)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<bos>"],
        eos_token_id=[ids["<eos>"], ids["<turn|>"]],
        pad_token_id=ids["<pad>"],
        do_sample=True,  # as the published -it models; the engine turns sampling off for transcription
        temperature=1.0,
        top_p=0.95,
        top_k=64,
    )
    model.save_pretrained(folder)
    processor_class(**parts, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def _family(family: str, text: dict, tokens: dict) -> tuple:
    """(a random model, its processor class, the processor's feature extractor and image/video processors)."""
    import transformers as tf

    if family == "gemma4_unified":
        config = tf.Gemma4UnifiedConfig(
            text_config=tf.Gemma4UnifiedTextConfig(
                **text, num_hidden_layers=2, num_key_value_heads=2, num_global_key_value_heads=1,
                attention_k_eq_v=True, layer_types=["sliding_attention", "full_attention"]),
            vision_config=tf.Gemma4UnifiedVisionConfig(mm_embed_dim=32, output_proj_dims=32, mm_posemb_size=64),
            audio_config=tf.Gemma4UnifiedAudioConfig(), **tokens)
        return (tf.Gemma4UnifiedForConditionalGeneration(config), tf.Gemma4UnifiedProcessor,
                {"feature_extractor": tf.Gemma4UnifiedAudioFeatureExtractor(),
                 "image_processor": tf.Gemma4UnifiedImageProcessor(),
                 "video_processor": tf.Gemma4UnifiedVideoProcessor()})
    if family == "gemma4":
        config = tf.Gemma4Config(
            text_config=tf.Gemma4TextConfig(
                **text, num_hidden_layers=4, num_key_value_heads=1, num_kv_shared_layers=2,
                hidden_size_per_layer_input=8, vocab_size_per_layer_input=text["vocab_size"],
                layer_types=["sliding_attention", "full_attention"] * 2),
            vision_config=tf.Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                                position_embedding_size=1024),
            audio_config=tf.Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              output_proj_dims=32),
            **tokens)
        return (tf.Gemma4ForConditionalGeneration(config), tf.Gemma4Processor,
                {"feature_extractor": tf.Gemma4AudioFeatureExtractor(), "image_processor": tf.Gemma4ImageProcessor(),
                 "video_processor": tf.Gemma4VideoProcessor()})
    raise ValueError(f"no tiny checkpoint for the family {family!r}")


def build_tiny_drafter(folder: str | Path, target: str | Path, *, seed: int = 1) -> Path:
    """Write a tiny random MTP drafter for the tiny checkpoint in `target` (4 layers, hidden 32) into `folder`."""
    import torch
    from transformers import AutoConfig

    from mediapipe_g4.drafter import random_drafter

    torch.manual_seed(seed)
    drafter = random_drafter(AutoConfig.from_pretrained(target), hidden=32, intermediate=64)
    drafter.save_pretrained(folder)
    return Path(folder)


def shared_kv_text_model(seed: int = 0):
    """A tiny random text-only `gemma4` model shaped like E2B/E4B: its last two layers reuse earlier layers' K/V."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma4TextConfig

    text = Gemma4TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, global_head_dim=32,
                            sliding_window=16, num_kv_shared_layers=2, hidden_size_per_layer_input=8,
                            vocab_size_per_layer_input=300, layer_types=["sliding_attention", "full_attention"] * 2,
                            eos_token_id=1, pad_token_id=0, bos_token_id=2)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(text).eval()


if __name__ == "__main__":  # python tests/tiny_model.py /tmp/tiny-gemma4 [gemma4_unified|gemma4]
    import sys

    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-gemma4",
                                family=sys.argv[2] if len(sys.argv) > 2 else "gemma4_unified"))
