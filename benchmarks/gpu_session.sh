#!/usr/bin/env bash
# Issue 7's GPU checks as ONE command for the device tool, sized for its lease: 15 minutes of device time a
# session (the machine's start, 1-2 minutes, included) and 10 minutes a command. The parts run most important
# first, each under its own time limit and all within GPU_SESSION_SECONDS (default 540), so that a part that
# hangs or compiles for too long costs only its own figures; each writes its JSON (rewritten after every
# sub-part) and log to $OUT, and the summary against the targets is printed last (the tool returns the tail).
#
# Here, once:        bash benchmarks/device_wheels.sh          (transformers 5.23 etc. into .whl/, git-ignored)
# The device call:   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=600)
# Rehearse it here:  bash benchmarks/gpu_session.sh --rehearse (the same parts, tiny shape on the CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/g4media-gpu}
mkdir -p "$OUT"
budget=${GPU_SESSION_SECONDS:-540}
python=${PYTHON:-python3}
extra=()
if [ "${1:-}" = "--rehearse" ]; then
  extra=(--smoke)  # tiny shape, CPU, eager compile backend: checks the script, not the speed
elif [ -d .whl ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_session: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
start=$SECONDS

# part NAME SECONDS ARGS...: one benchmark run, at most SECONDS and never past the budget.
part() {
  local name=$1 limit=$2 left
  shift 2
  left=$((budget - (SECONDS - start)))
  ((limit > left)) && limit=$left
  if ((limit < 30)); then
    echo "gpu_session: $name skipped, $left s of the budget left"
    return
  fi
  echo "gpu_session: $name (at most $limit s) after $((SECONDS - start)) s"
  timeout -k 10 "$limit" "$python" benchmarks/gpu_throughput.py "$@" "${extra[@]}" --json "$OUT/$name.json" \
    >"$OUT/$name.log" 2>&1
  local rc=$?
  ((rc == 124 || rc == 137)) && echo "gpu_session: $name stopped at its limit ($limit s); what finished is kept"
  ((rc != 0 && rc != 124 && rc != 137)) && { echo "gpu_session: $name failed ($rc):"; tail -n 15 "$OUT/$name.log"; }
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>/dev/null \
    || echo "no nvidia-smi"; "$python" -c 'import torch, transformers; print("torch", torch.__version__,
"transformers", transformers.__version__)'; } >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. The engine's own path (static cache + torch.compile): every stage of a 30-minute meeting, decode ms/step at
#    batch 1 and at the batch used, compile counts, and the drafter's cost per step.
part static 300 --minutes 30 --parts stages,drafter --decode static --repeat 2
# 2. The long-context targets: 128 k without running out of memory, 256 k in at most 60 s (the new variants;
#    sdpa at 262 k took 158 s on an H100 in DESIGN.md).
part long 150 --parts long --long 131072,262144 --long-attention flex,lower-right --repeat 1
# 3. "Before" on the same machine kind: transformers' default decoding of the same meeting's transcription.
part dynamic 150 --minutes 30 --parts stages --decode dynamic --no-notes --repeat 1

"$python" benchmarks/gpu_summary.py "$OUT"/static.json "$OUT"/long.json "$OUT"/dynamic.json
status=$?  # 1: no figures at all
echo "gpu_session: $((SECONDS - start)) s in all; figures and logs in $OUT"
exit $status
