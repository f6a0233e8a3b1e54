"""What one compiled decode shape costs: torch.compile's time for the 12B's layer shapes, per process.

Builds the 12B shape with `--layers` layers (random weights, benchmarks/gpu_throughput.py), decodes two short
transcription requests through the project's engine on the static path, twice, and prints the first call
(compile + run), the second (run only) and dynamo's own compile time (`compile_inner`). Run it twice with the
same `--cache-dir`: the first run compiles every kernel, the second finds them on disk and shows what every new
process still pays per shape (dynamo's trace).

    python benchmarks/compile_time.py --layers 12 --device cpu --cache-dir /tmp/kernels   # twice
    python benchmarks/compile_time.py --layers 48 --cache-dir /tmp/kernels                # on a GPU, twice
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=("12b", "tiny"), default="12b", help="tiny: the test checkpoint's (a smoke run)")
    p.add_argument("--layers", type=int, default=48, help="layers of the 12B shape (48: the whole model)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--cache-dir", default=None, help="torch's kernel cache (default: a new, empty folder)")
    p.add_argument("--backend", default="inductor")
    args = p.parse_args(argv)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="g4-kernels-")
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

    import numpy as np
    from gpu_throughput import BenchEngine, build_model, peak_gb, timed
    from torch._dynamo.utils import compile_times

    from mediapipe_g4 import static_decode
    from mediapipe_g4.engine import AudioPart, EngineRequest, GenerationSettings
    from mediapipe_g4.memory import pick_device, pick_dtype
    from mediapipe_g4.prompts import transcription_parts
    from mediapipe_g4.transformers_engine import EngineOptions

    static_decode.COMPILE_BACKEND = args.backend
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model, processor, config = build_model(args.shape, device, dtype, Path(tmp) / "tiny", args.layers)
    engine = BenchEngine(EngineOptions(model="random", device=device, dtype=dtype, batch_size=2, compile=True),
                         model, processor, config, device, dtype)
    engine.set_decode("static")
    engine.fix_decode_length(4)
    wave = (np.random.default_rng(0).standard_normal(16_000 * 4) * 0.1).astype(np.float32)
    requests = [EngineRequest("transcribe", transcription_parts(AudioPart(0.0, 2.0 + i, wave)), start=0.0,
                              end=2.0 + i, settings=GenerationSettings(max_new_tokens=4, greedy=True)) for i in range(2)]
    seconds = [timed(device, lambda: engine.generate(requests)) for _ in range(2)]  # compile + run, then run
    traced = sum(float(line.split(",")[1]) for line in compile_times(repr="str", aggregate=True).splitlines()
                 if line.startswith("_compile.compile_inner"))
    print(f"{args.shape}, {config.get_text_config().num_hidden_layers} layers, {device} ({dtype}), kernels in {os.environ['TORCHINDUCTOR_CACHE_DIR']}")
    print(f"first call {seconds[0]:.2f} s, second {seconds[1]:.2f} s, compile ~{seconds[0] - seconds[1]:.1f} s "
          f"(dynamo compile_inner {traced:.2f} s), shapes {sorted(engine.static.compiled)}, peak {peak_gb(device):.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
