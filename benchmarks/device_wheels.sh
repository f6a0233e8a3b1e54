#!/usr/bin/env bash
# The wheels benchmarks/gpu_throughput.py needs on the lent GPU machine (the `device` tool), fetched here.
#
# That machine has PyTorch, Triton, transformers 5.17, accelerate, numpy, scipy, scikit-learn, numba, tokenizers,
# huggingface_hub ... (/work/.library/device/KINDS.md) but no network, and Gemma 4's `gemma4_unified` needs
# transformers 5.23. Run this here, in the repo root; `.whl/` is git-ignored and travels with the run's `carry`
# (about 44 MB of the 64 MiB a run may take). Then, on the device:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_throughput.py ...
#
# PY=3.11 fetches wheels for this machine's Python instead (to rehearse the install here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
platforms=()
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
         manylinux2014 manylinux_2_5 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
rm -rf .whl && mkdir -p .whl
# What the benchmark imports beyond the device's packages (and the versions tested with it): transformers with
# Gemma 4, the diarization stack (Silero VAD, Resemblyzer and its librosa, soundfile, webrtcvad), pydantic.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  "${platforms[@]}" -d .whl \
  transformers==5.23.0 silero-vad==6.2.3 resemblyzer==0.1.4 webrtcvad-wheels==2.0.14.post1 librosa==0.11.0 \
  soundfile==0.14.0 cffi pycparser soxr pooch platformdirs decorator audioread \
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types typing-inspection typing-extensions
du -sh .whl
