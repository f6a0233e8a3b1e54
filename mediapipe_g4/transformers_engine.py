"""Gemma 4 in this process with transformers: load a checkpoint, run batches of requests.

Any `gemma4_unified` (12B) or `gemma4` (E2B/E4B) checkpoint loads from a Hub id or a local folder with
`AutoProcessor` + `AutoModelForMultimodalLM`. Requests are sorted by length and batched with left
padding; transcription decodes greedily. Long text-and-image prompts are prefilled in chunks (the dense
attention mask of a one-shot 131 k-token prefill alone is 16 GiB). With `compile` (the default on CUDA),
batches whose static cache fits in free memory decode through torch.compile (static_decode.py). With
`assistant` (the MTP drafter, e.g. google/gemma-4-12B-it-assistant) single-request batches decode
speculatively; transformers' assisted generation takes one sequence at a time, so batched transcription
does not use it.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .engine import EngineRequest, Hook, clean_response
from .errors import ModelError
from .memory import PREFILL_CHUNK, choose_dtype, pick_device

log = logging.getLogger("mediapipe_g4")

DEFAULT_MODEL = "google/gemma-4-12B-it"
SUPPORTED_TYPES = ("gemma4_unified", "gemma4")
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")  # one value a token
PROCESSOR_PATTERNS = ("*.json", "*.jinja", "*.model")  # everything but the weights


@dataclass(frozen=True)
class EngineOptions:
    model: str = DEFAULT_MODEL  # Hub id or local folder
    device: str | None = None  # cuda, cuda:1, mps, cpu; None: the best there is
    dtype: str | None = None  # bfloat16, float16, float32; None: bf16 on GPUs, float32 on CPU
    quantize: str | None = None  # "4bit" or "8bit" (CUDA + bitsandbytes)
    assistant: str | None = None  # MTP drafter for speculative decoding
    batch_size: int | None = None  # requests per batch; None: each call's requests (the caller sizes them)
    prefill_chunk: int = PREFILL_CHUNK  # text/image prompts longer than this are prefilled in chunks
    attn_implementation: str | None = None  # None: transformers' default (sdpa)
    compile: bool | None = None  # static cache + torch.compile for decoding; None: on CUDA GPUs only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- finding the files


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes")


def hf_command() -> str:
    """How to run Hugging Face's `hf` here: by name where it is on the PATH, else where it was installed beside this
    Python (the README's venv is never activated: `hf download` pasted from an error was "command not found")."""
    beside = Path(sys.executable).parent / "hf"
    return "hf" if shutil.which("hf") or not beside.is_file() else shlex.quote(str(beside))


def download_hint(model: str, *, processor_only: bool = False, option: str = "--model") -> str:
    include = " --include " + " ".join(f'"{p}"' for p in PROCESSOR_PATTERNS) if processor_only else ""
    hf = hf_command()
    return (f"download it with `{hf} download {model}{include}` (accept the Gemma license on huggingface.co and "
            f"`{hf} auth login` first), or pass {option} /path/to/a/local/folder")


def resolve_model(model: str, *, example: str = DEFAULT_MODEL) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder); a bad local path is a ModelError."""
    path = Path(model).expanduser()
    looks_local = (path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
                   or (os.sep == "\\" and "\\" in model))
    if not looks_local:
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model) or model.startswith(("-", ".")) or len(model) > 96:
            raise ModelError(f"{model!r} is neither a model folder here nor a Hugging Face Hub id (like {example}); "
                             "pass a Hub id or a folder made with save_pretrained")
        return model, False
    if not path.is_dir():
        what = "is a file, not a model folder" if path.exists() else "does not exist"  # (--model the recording)
        raise ModelError(f"model folder {model} {what}; pass a folder made with save_pretrained "
                         f"or a Hub id such as {example}")
    if not (path / "config.json").is_file():
        raise ModelError(f"{model} is not a model folder (it has no config.json); pass a folder made with "
                         f"save_pretrained or a Hub id such as {example}")
    return str(path), True


def in_cache(model: str, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, filename), str)


def _load_error(model: str, what: str, exc: Exception, *, processor_only: bool = False,
                option: str = "--model") -> ModelError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return ModelError(f"{model} is gated: accept its license on https://huggingface.co/{model}, run "
                          f"`{hf_command()} auth login`, then "
                          f"{download_hint(model, processor_only=processor_only, option=option)}")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelError(f"{model} is not a model on the Hugging Face Hub; check the id, or pass {option} "
                          "/path/to/a/local/folder")
    reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    if Path(model).expanduser().is_dir():  # a local folder: downloading is not the fix
        return ModelError(f"cannot load the {what} of the folder {model} ({reason}); it should hold a Gemma 4 "
                          "checkpoint as save_pretrained writes it (config.json, the weights, the processor files)")
    return ModelError(f"cannot load the {what} of {model} ({reason}); "
                      f"{download_hint(model, processor_only=processor_only, option=option)}")


_PROCESSORS: dict[str, Any] = {}  # loaded once per process: the planner, the token counter and the engine share it
_PROCESSORS_LOCK = threading.Lock()


def load_processor(model: str, *, local_only: bool = False) -> Any:
    """The model's processor (tokenizer, chat template, audio and image processors); no weights. Loaded once a
    process (a second caller, e.g. on another thread, waits for the first): the imports alone take seconds."""
    source, local = resolve_model(model)
    with _PROCESSORS_LOCK:
        if source not in _PROCESSORS:
            _PROCESSORS[source] = _load_processor(model, source, local, local_only)
        return _PROCESSORS[source]


def _load_processor(model: str, source: str, local: bool, local_only: bool) -> Any:
    if not local and (local_only or offline()) and not in_cache(source, "processor_config.json") \
            and not in_cache(source, "tokenizer_config.json"):
        raise ModelError(f"the processor files of {model} are not in the Hugging Face cache"
                         f"{' and downloads are off (HF_HUB_OFFLINE)' if offline() else ''}; "
                         f"{download_hint(model, processor_only=True)}")
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only or offline())
    except Exception as exc:
        raise _load_error(model, "processor", exc, processor_only=True) from exc
    if getattr(processor, "tokenizer", None) is None or not hasattr(processor, "feature_extractor"):
        raise ModelError(f"{model} has no audio-capable processor; g4media needs a Gemma 4 checkpoint "
                         f"({' or '.join(SUPPORTED_TYPES)})")
    return processor


def load_config(model: str, *, local_only: bool = False) -> Any:
    """The model's config (no weights); checks it is a Gemma 4 checkpoint."""
    source, local = resolve_model(model)
    if not local and (local_only or offline()) and not in_cache(source):
        raise ModelError(f"{model} is not in the Hugging Face cache"
                         f"{' and downloads are off (HF_HUB_OFFLINE)' if offline() else ''}; {download_hint(model)}")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only or offline())
    except Exception as exc:
        raise _load_error(model, "config", exc) from exc
    if config.model_type not in SUPPORTED_TYPES:
        raise ModelError(f"{model} is a {config.model_type!r} model; g4media runs Gemma 4 checkpoints "
                         f"({' or '.join(SUPPORTED_TYPES)}), e.g. {DEFAULT_MODEL}")
    return config


def weights_size(model: str) -> float | None:
    """Bytes of the weights as stored, from the safetensors index (downloaded with the processor files)."""
    import json

    source, local = resolve_model(model)
    index = Path(source) / "model.safetensors.index.json" if local else None
    if not local:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "model.safetensors.index.json")
        index = Path(found) if isinstance(found, str) else None
    if index is None or not index.is_file():
        return None
    return float(json.loads(index.read_text()).get("metadata", {}).get("total_size") or 0) or None


# --------------------------------------------------------------------------- the engine


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


# What bitsandbytes leaves in 16 bits: the embedders of audio and images, E2B/E4B's audio and vision towers, and the
# output head (small, and sensitive). transformers matches a name from the start of a module's full name (or as its
# end), so the modules under `model.` are named in full: a bare "audio_tower" matches nothing and was quantized.
QUANT_SKIP = ["lm_head", "model.embed_vision", "model.embed_audio", "model.vision_tower", "model.audio_tower"]


def _quantization_config(quantize: str, dtype: str, device: str):
    if not device.startswith("cuda"):
        raise ModelError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelError("--quantize needs bitsandbytes: pip install 'g4media[quant]'") from exc
    from transformers import BitsAndBytesConfig

    skip = list(QUANT_SKIP)
    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=_torch_dtype(dtype), llm_int8_skip_modules=skip)
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    raise ModelError(f"--quantize takes 4bit or 8bit, not {quantize!r}")


def model_shape(model: str, config: Any = None) -> Any:
    """The `memory.ModelShape` of a model here (its config, and its stored size when the weights index says it)."""
    from .memory import shape_from_config

    stored = weights_size(model)
    return shape_from_config(config if config is not None else load_config(model, local_only=True), model,
                             params=stored / 2 if stored else None)


def check_room(shape: Any, device: str, dtype: str, quantize: str | None) -> None:
    """Refuse a model whose weights alone exceed the memory this device has free (`memory.weights_room`), as
    Ollama does: a CPU load would end in the kernel's out-of-memory kill, without a word; a GPU one after minutes
    of loading."""
    from . import memory as mem

    need = mem.weights_bytes(shape, dtype, quantize)
    free, name, swap = mem.weights_room(device)
    if need <= free:
        return
    if device == "cpu" and dtype == "float32" and need / 2 <= free:
        hint = "leave out --dtype float32 or pass --dtype bfloat16 (half the memory), use a smaller model"
    elif device.startswith("cuda") and not quantize:
        hint = "use --quantize 4bit, a smaller model (--model google/gemma-4-E4B-it)"
    else:
        hint = "use a smaller model (--model google/gemma-4-E4B-it or -E2B-it)"
    raise ModelError(f"{shape.name} needs about {need / mem.GB:.1f} GB for its weights ({dtype}"
                     f"{', ' + quantize if quantize else ''}) and {name} has {(free + mem.RUNTIME_BYTES) / mem.GB:.1f} "
                     f"GB free{' with swap' if swap else ''} ({mem.RUNTIME_BYTES / mem.GB:g} GB of it for the rest of "
                     f"the run): {hint}, or a model server (--server URL)")


CPU_WARN_PARAMS = 9e9  # the 12B (11.96 B parameters) and larger; not the smaller E4B and E2B


def _stop_at_turn_end(model: Any, tokenizer: Any) -> None:
    """Stop at `<turn|>` (the end of the model's turn) and `<eos>` whatever the checkpoint's generation config says:
    a folder without generation_config.json stops at `<eos>` only, and every answer ran to its token budget (4096
    for the notes) unless `<eos>` happened to follow."""
    config = model.generation_config
    ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    for token in ("<turn|>", "<eos>"):
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            ids.append(found)
    config.eos_token_id = list(dict.fromkeys(i for i in ids if i is not None))
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id


class TransformersEngine:
    """Gemma 4 through transformers, in this process."""

    name = "transformers"

    def __init__(self, options: EngineOptions = EngineOptions()):
        self.options = options
        self.device = pick_device(options.device)
        self.config = load_config(options.model)
        self.shape = shape = model_shape(options.model, self.config)
        self.dtype = choose_dtype(shape, self.device, options.dtype, options.quantize)
        check_room(shape, self.device, self.dtype, options.quantize)
        if self.device == "cpu" and shape.params > CPU_WARN_PARAMS:
            log.warning("%s runs on the CPU here%s: a model of %.0f billion parameters takes far longer than the "
                        "recording itself on a CPU; a GPU, a model server (--server URL) or --model "
                        "google/gemma-4-E4B-it is much faster", options.model,
                        "" if options.device else " (no GPU found)", shape.params / 1e9)
        self.processor = load_processor(options.model)
        self.processor.tokenizer.padding_side = "left"
        self.model = self._load_model(options.model)
        _stop_at_turn_end(self.model, self.processor.tokenizer)
        self.assistant = self._load_assistant(options.assistant) if options.assistant else None
        self.static = self._static_decoder()

    def _prefill_in_chunks(self, inputs: dict[str, Any], cache: Any, chunk: int) -> dict[str, Any]:
        """Prefill all but the prompt's last token into the static `cache` in chunks, uncompiled (transformers
        would compile a graph for every chunk's shape), and return what `generate` continues from the cache with:
        the token sequences (the images were read)."""
        head = {k: v[:, :-1] if k in SEQUENCE_INPUTS else v for k, v in inputs.items()}
        self.model.generate(**head, past_key_values=cache, max_new_tokens=1, min_new_tokens=0, do_sample=False,
                            temperature=None, top_p=None, top_k=None, prefill_chunk_size=image_safe_chunk(head, chunk),
                            disable_compile=True)
        return {k: v for k, v in inputs.items() if k in SEQUENCE_INPUTS}

    def _static_decoder(self):
        """The static-cache decoder when compiling is on (CUDA by default) and possible here, else None."""
        wanted = self.options.compile if self.options.compile is not None else self.device.startswith("cuda")
        if not wanted:
            return None
        if self.options.quantize:
            log.info("decoding without torch.compile: bitsandbytes weights do not compile")
            return None
        from .static_decode import StaticDecoder

        # the shape counted before loading, with the parameters as loaded (not the meta model counted again)
        shape = replace(self.shape, params=float(sum(p.numel() for p in self.model.parameters())))
        return StaticDecoder(self.model, shape, self.device, self.dtype, largest_batch=self.options.batch_size,
                             prefill_chunk=self.options.prefill_chunk)

    def _load_model(self, model: str):
        from transformers import AutoModelForMultimodalLM

        source, _ = resolve_model(model)
        # device_map: the shards load straight onto the device (no second copy of the weights in host RAM).
        kwargs: dict[str, Any] = {"dtype": _torch_dtype(self.dtype), "local_files_only": offline(),
                                  "device_map": {"": self.device}}
        if self.options.attn_implementation:
            kwargs["attn_implementation"] = self.options.attn_implementation
        if self.options.quantize:
            kwargs["quantization_config"] = _quantization_config(self.options.quantize, self.dtype, self.device)
        log.info("loading %s on %s (%s%s)", model, self.device, self.dtype,
                 f", {self.options.quantize}" if self.options.quantize else "")
        try:
            loaded = AutoModelForMultimodalLM.from_pretrained(source, **kwargs)
        except ModelError:
            raise
        except Exception as exc:
            if "out of memory" in str(exc).lower():
                raise ModelError(f"{model} does not fit in the memory of {self.device} in {self.dtype}: try "
                                 "--quantize 4bit (CUDA), a smaller model (--model google/gemma-4-E4B-it), "
                                 "or --device cpu") from exc
            raise _load_error(model, "weights", exc) from exc
        return loaded.eval()

    def _load_assistant(self, assistant: str):
        from .drafter import check_pair, is_mtp_drafter, load_drafter, share_kv_with_drafter

        source, local = resolve_model(assistant, example=DEFAULT_MODEL + "-assistant")
        if not local and offline() and not in_cache(source):
            raise ModelError(f"the drafter {assistant} is not in the Hugging Face cache; "
                             f"{download_hint(assistant, option='--assistant')}")
        try:
            drafter = load_drafter(source, dtype=_torch_dtype(self.dtype), device=self.device,
                                   local_files_only=offline())
        except Exception as exc:
            raise _load_error(assistant, "drafter weights", exc, option="--assistant") from exc
        if is_mtp_drafter(drafter):
            check_pair(drafter, self.config, (assistant, self.options.model))
            share_kv_with_drafter(self.model)
        else:
            log.warning("%s is a %s, not a Gemma 4 MTP drafter; using it for generic assisted decoding",
                        assistant, type(drafter).__name__)
        return drafter

    # ----------------------------------------------------------------- generation

    def generate(self, requests: Sequence[EngineRequest], hook: Hook | None = None) -> list[str]:
        """Texts for `requests`, in their order. Batches group requests with the same decoding settings (but
        for their answer budgets: each row stops at its own) and image size, longest first (an
        out-of-memory shows at once; batches then halve)."""
        outputs: list[str | None] = [None] * len(requests)
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((replace(r.settings, max_new_tokens=0), r.image_tokens if r.images else 0),
                              []).append(i)
        done = 0
        for indices in groups.values():
            indices.sort(key=lambda i: -(requests[i].tokens or self._rough_length(requests[i])))
            size = max(1, self.options.batch_size or len(indices))
            if self.static is not None:  # a smaller batch on the static path beats a big one without it
                longest = requests[indices[0]]
                size = self.static.fitting_batch(size, longest.tokens or self._rough_length(longest),
                                                 max(requests[i].settings.max_new_tokens for i in indices))
            pos, static_ok = 0, True
            while pos < len(indices):
                batch = indices[pos : pos + size]
                try:
                    texts = self._generate_batch([requests[i] for i in batch], static_ok=static_ok)
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    _empty_cache()
                    if len(batch) > 1:  # (the last batch may be smaller than `size`: halve what failed)
                        size = max(1, len(batch) // 2)
                        log.warning("out of memory with %d requests per batch; trying %d", len(batch), size)
                        continue
                    if static_ok and self.static is not None:  # its cache and compiled step take memory of their own
                        log.warning("out of memory decoding one request of %s tokens with the static cache; decoding "
                                    "it without", requests[batch[0]].tokens or "?")
                        static_ok = False
                        continue
                    raise ModelError(f"out of memory on {self.device} with one request of "
                                     f"{requests[batch[0]].tokens or '?'} tokens: lower --context-tokens, "
                                     "use --quantize 4bit, or a smaller model") from exc
                static_ok = True
                for i, text in zip(batch, texts):
                    outputs[i] = text
                pos += len(batch)
                done += len(batch)
                if hook:
                    hook("generate", done, len(requests))
        return [o or "" for o in outputs]

    @staticmethod
    def _rough_length(request: EngineRequest) -> int:
        return int(request.audio_seconds * 25) + 280 * len(request.images) + sum(
            len(getattr(p, "text", "")) // 4 for p in request.parts)

    def _inputs(self, requests: Sequence[EngineRequest]):
        conversations = [r.messages() for r in requests]
        processor_kwargs: dict[str, Any] = {"padding": True}
        if any(r.images for r in requests):
            processor_kwargs["images_kwargs"] = {"max_soft_tokens": requests[0].image_tokens}
        return self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            add_generation_prompt=True,
            enable_thinking=requests[0].settings.enable_thinking,
            processor_kwargs=processor_kwargs,
        )

    def _generate_batch(self, requests: Sequence[EngineRequest], *, static_ok: bool = True) -> list[str]:
        """Answers of one batch: on the static path (compiled) when it is planned, fits and `static_ok`."""
        import torch

        settings, count = requests[0].settings, len(requests)
        budgets = [r.settings.max_new_tokens for r in requests]
        max_new = max(budgets)
        inputs = self._inputs(requests)
        length = inputs["input_ids"].shape[1]
        static = self.static.plan(count, length, max_new) if self.static and static_ok else None
        if static is not None and static.chunk and "input_features" in inputs:  # raw audio does not split in chunks
            static = None
        if static is None and self.static is not None:
            self.static.release()  # the last static batch's cache (21 GB for 64 clips of the 12B) is not this one's
        # transformers drafts on a dynamic cache only, whose launch-bound steps cost about 4x a compiled static step
        # on a GPU (DESIGN.md: 97.5 vs 22 ms at batch 1) against a reported 1.9-2.4x from drafting: the drafter
        # takes the single requests that do not get the static path (no compile) and are prefilled in one pass.
        drafting = self.assistant is not None and count == 1 and static is None
        if static is not None and static.batch > count:  # a bucket's batch: pad with copies of the last request
            requests = [*requests, *[requests[-1]] * (static.batch - count)]
            inputs = self._inputs(requests)
            length = inputs["input_ids"].shape[1]
            budgets = [*budgets, *[1] * (static.batch - count)]  # the copies' answers are dropped
        dtype = _torch_dtype(self.dtype)
        inputs = {k: (v.to(self.device, dtype=dtype) if torch.is_floating_point(v) else v.to(self.device))
                  if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        kwargs: dict[str, Any] = {"max_new_tokens": max_new}
        if min(budgets) < max_new:
            kwargs["stopping_criteria"] = row_budgets(budgets, length)
        if settings.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
            if settings.seed is not None:
                torch.manual_seed(settings.seed)  # every device's generator: the batch samples as it did before
        if static is not None:
            kwargs.update(self.static.generate_kwargs(static))
        elif length > self.options.prefill_chunk and "input_features" not in inputs:
            kwargs["prefill_chunk_size"] = image_safe_chunk(inputs, self.options.prefill_chunk)
            # transformers' assisted decoding prefills in one pass, whatever prefill_chunk_size says: a long notes
            # prompt's dense mask and activations in one go (a 131k one runs out of memory on an 80 GB H100)
            drafting = False
        if drafting:
            kwargs["assistant_model"] = self.assistant
        try:
            # no_grad, as transformers' own generate, on the compiled path: CUDA graphs and tensors made under
            # inference_mode have had issues together (pytorch#135892); nothing is gained there either way.
            with torch.no_grad() if static is not None else torch.inference_mode():
                if static is not None and static.chunk:
                    inputs = self._prefill_in_chunks(inputs, kwargs["past_key_values"], static.chunk)
                out = self.model.generate(**inputs, **kwargs)
        except Exception as exc:
            if static is None:
                raise
            self.static.release()  # an out-of-memory retries with a smaller batch; that needs the memory back
            if _is_oom(exc):
                raise
            log.warning("decoding with torch.compile failed (%s); decoding without it from now on", _root_cause(exc))
            self.static = None
            return self._generate_batch(requests[:count])
        tokenizer = self.processor.tokenizer
        # each answer as long as its own budget allows, whatever the batch decoded for the others
        raw = [tokenizer.decode(row[length:length + budget], skip_special_tokens=False)
               for row, budget in zip(out[:count], budgets)]
        needs_prefix = getattr(tokenizer, "response_template", None) is not None
        prefixes = tokenizer.batch_decode(inputs["input_ids"][:count], skip_special_tokens=False) if needs_prefix \
            else [None] * len(raw)
        return [clean_response(text, tokenizer=tokenizer, prefix=prefix) for text, prefix in zip(raw, prefixes)]


def image_safe_chunk(inputs: dict[str, Any], chunk: int) -> int:
    """The prefill chunk size for `inputs`: the largest from `chunk` down to half of it whose chunk boundaries
    all fall outside the prompt's images and videos, else `chunk`.

    transformers cuts a chunked prefill every `chunk` tokens. An image's tokens attend to each other both ways;
    a cut inside one leaves its tokens before the cut blind to those after it, unlike a one-shot prefill (on the
    tiny checkpoint: logits 1e-2 apart, against 3e-7 when no image is cut). Text is causal, so a cut there
    changes nothing."""
    import numpy as np

    types, length = inputs.get("mm_token_type_ids"), inputs["input_ids"].shape[1]
    if types is None or length <= chunk:
        return chunk
    media = ((types == 1) | (types == 2)).any(dim=0).cpu().numpy()  # 1, 2: image, video (rows share positions)
    cuts = np.zeros(length, dtype=bool)  # cuts[b]: a chunk that ends before token b splits an image
    cuts[1:] = media[1:] & media[:-1]
    if not cuts.any():
        return chunk
    for size in range(chunk, max(1, chunk // 2) - 1, -1):
        if not cuts[size::size].any():
            return size
    log.debug("every prefill chunk size from %d to %d cuts an image; using %d", chunk, chunk // 2, chunk)
    return chunk


def row_budgets(budgets: Sequence[int], prompt_length: int) -> Any:
    """A stopping criterion that ends each row of a batch at its own answer budget. A row that is done only pads
    while the others go on, so the batch ends once every row has said <eos> or used its budget: a decoding loop
    on a short clip no longer holds a batch whose other rows have finished for the largest budget's steps."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowBudgets(StoppingCriteria):
        def __init__(self) -> None:
            self.limits: torch.Tensor | None = None

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            if self.limits is None:  # made once, on the batch's device
                self.limits = torch.tensor(budgets, device=input_ids.device) + prompt_length
            return input_ids.shape[1] >= self.limits

    return StoppingCriteriaList([RowBudgets()])


def _root_cause(exc: BaseException) -> str:
    """`Type: first line` of the innermost cause (torch.compile wraps the real error in layers)."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    line = next((x.strip() for x in str(exc).splitlines() if x.strip()), "")
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def _is_oom(exc: Exception) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
