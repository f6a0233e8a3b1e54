"""`g4media doctor`: what this machine has for g4media, and what is missing."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .memory import GB

DEFAULT_MODEL = "google/gemma-4-12B-it"


def _check(name: str, status: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, **extra}


def check_ffmpeg() -> dict[str, Any]:
    from . import media
    from .errors import FFmpegNotFound

    try:
        binary = media.ffmpeg_binary()
        version = media.ffmpeg_version()
    except FFmpegNotFound as exc:
        return _check("ffmpeg", "fail", str(exc))
    probe = media.ffprobe_binary()
    detail = f"{version} ({binary})"
    if not probe:
        detail += "; no ffprobe, probing parses ffmpeg's output"
    return _check("ffmpeg", "ok", detail, path=binary, ffprobe=probe)


def check_torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return _check("torch", "fail", f"torch does not import ({exc}); reinstall g4media")
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            devices.append(f"cuda:{i} {torch.cuda.get_device_name(i)} "
                           f"({free / GB:.1f} of {total / GB:.1f} GB free)")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps (Apple GPU)")
    if not devices:
        return _check("torch", "warn", f"torch {torch.__version__}: no GPU, the model runs on the CPU "
                      "(slow: a 12B model needs ~48 GB RAM in float32, ~26 GB in bfloat16; use a smaller model "
                      "or a model server, --server URL)",
                      devices=["cpu"])
    return _check("torch", "ok", f"torch {torch.__version__}: " + "; ".join(devices), devices=devices)


def check_compile() -> dict[str, Any]:
    """Whether decoding can use torch.compile (docs/MODEL.md): on CUDA it needs Triton, and both need a C compiler."""
    try:
        import torch
    except ImportError:
        return _check("compile", "warn", "torch does not import")
    compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if not torch.cuda.is_available():
        return _check("compile", "ok", "no CUDA GPU: decoding runs without torch.compile (--compile turns it on)")
    try:
        import triton
    except ImportError:
        return _check("compile", "warn", "Triton is missing: decoding runs without torch.compile, several times "
                      "slower (pip install triton)")
    if compiler is None:
        return _check("compile", "warn", "no C compiler: decoding runs without torch.compile, several times "
                      "slower (install gcc, e.g. apt-get install gcc)")
    return _check("compile", "ok", f"static-cache decoding with torch.compile (Triton {triton.__version__}, "
                  f"{shutil.which(compiler)})")


def check_memory() -> dict[str, Any]:
    import psutil

    mem = psutil.virtual_memory()
    avail = mem.available / GB
    status = "ok" if avail >= 8 else "warn"
    return _check("memory", status, f"{avail:.1f} of {mem.total / GB:.1f} GB RAM available",
                  available_bytes=mem.available, total_bytes=mem.total)


def check_disk() -> dict[str, Any]:
    from .workdir import cache_root

    root = cache_root()
    there = next((p for p in (root, *root.parents) if p.exists()), Path.home())  # made below it when needed
    if not there.is_dir():
        what = f"{root} is a file" if there == root else f"{root} cannot be made: {there} is a file"
        return _check("cache", "fail", f"{what}, not a folder; set G4MEDIA_CACHE to a folder (the "
                      "commands that run take --cache-dir too)", path=str(root))
    if not os.access(there, os.W_OK | os.X_OK):
        return _check("cache", "fail", f"{root}: {there} cannot be written; set G4MEDIA_CACHE to a folder "
                      "that can be (the commands that run take --cache-dir too)", path=str(root))
    free = shutil.disk_usage(there).free / GB
    return _check("cache", "ok" if free >= 5 else "warn", f"{root} ({free:.0f} GB free)", path=str(root))


def check_model(model: str | None) -> dict[str, Any]:
    model = model or DEFAULT_MODEL
    from .errors import ModelError
    from .transformers_engine import hf_command, load_config, resolve_model

    try:
        resolved, local = resolve_model(model)
    except ModelError as exc:
        return _check("model", "fail", str(exc), model=model)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return _check("model", "warn", "huggingface_hub is missing; cannot look in the cache")
    cached = None if local else try_to_load_from_cache(model, "config.json")
    if local or isinstance(cached, str):
        where = f"{model}: local folder" if local else f"{model} is in the Hugging Face cache"
        try:
            load_config(resolved, local_only=True)
        except ModelError as exc:  # a broken config.json, another kind of model
            return _check("model", "fail", str(exc), model=model)
        missing = _missing_weights(Path(resolved) if local else Path(cached).parent)
        if missing:
            return _check("model", "fail", f"{where}, but {missing}", model=model)
        return _fits(resolved if local else model, where)
    from .memory import GEMMA4_12B

    size = " (about 24 GB)" if model == GEMMA4_12B.name else ""
    missing = f"{model} is not downloaded: run `{hf_command()} download {model}`{size}, or pass --model /path/to/folder"

    if model != GEMMA4_12B.name:
        return _check("model", "warn", missing, model=model)
    # The default model's shape is known without the download: say whether it would fit here.
    fits, said, extra = _fit(model, GEMMA4_12B)
    verdict = f"once downloaded it {said}" if fits else f"it would not fit here: {said}"
    return _check("model", "warn", f"{missing}; {verdict}", model=model, **extra)


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _missing_weights(folder: Path) -> str | None:
    """What is missing of a checkpoint's weights in its folder (a save_pretrained folder, or a Hub snapshot whose
    download stopped part-way), or None."""
    found = next((folder / name for name in _WEIGHTS if (folder / name).is_file()), None)
    if found is None:
        return "it holds no weights (model.safetensors or its shards): download them again, or save the model there"
    if found.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"its {found.name} cannot be read ({exc})"
        gone = [shard for shard in shards if not (folder / shard).is_file()]
        if gone:
            return (f"{len(gone)} of its {len(shards)} weight files are missing ({gone[0]}...): the download "
                    "stopped part-way; run it again")
    return None


def _fits(model: str, where: str) -> dict[str, Any]:
    """The model check of a model that is here."""
    fits, said, extra = _fit(model)
    return _check("model", "ok" if fits else "warn", f"{where}; {said}" if fits else f"{where}, but {said}",
                  model=model, **extra)


def _fit(model: str, shape: Any = None) -> tuple[bool, str, dict[str, Any]]:
    """Whether a model's weights fit on the best device here, what to say about it, and the device and dtype.
    `shape`: the model's, when it is known without its config."""
    from .errors import G4Error
    from .memory import choose_dtype, pick_device, weights_bytes
    from .transformers_engine import check_room, model_shape

    try:
        device = pick_device()
        shape = shape or model_shape(model)
        dtype = choose_dtype(shape, device)
        check_room(shape, device, dtype, None)
    except G4Error as exc:
        return False, str(exc), {}
    return True, f"runs on {device} in {dtype} ({weights_bytes(shape, dtype) / GB:.1f} GB of weights)", \
        {"device": device, "dtype": dtype}


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("g4media", "transformers", "torch", "torchvision", "silero-vad", "resemblyzer"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_checks(model: str | None = None) -> dict[str, Any]:
    checks = [check_ffmpeg(), check_torch(), check_compile(), check_memory(), check_disk(), check_model(model)]
    pkgs = versions()
    checks.append(_check("packages", "ok", ", ".join(f"{k} {v}" for k, v in pkgs.items())))
    return {"checks": checks, "versions": pkgs}
