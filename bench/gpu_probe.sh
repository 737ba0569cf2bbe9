#!/usr/bin/env bash
# Profile one layout on every rank and summarise where each rank's GPU time went, in one device call.
# Usage (repository root): bash bench/gpu_probe.sh OUT SIZE "OVERRIDES"
#   e.g. bash bench/gpu_probe.sh OUT large "parallel=tensor train.microbatch_size=16"
#   Environment words for the run go before the command: NCCL_PROTO=Simple bash bench/gpu_probe.sh ...
# Writes OUT/probe/profile_probe.txt (rank 0's top operators), every rank's trace
# (OUT/probe/trace_probe_rank<r>.json.gz) and OUT/probe/summary.txt (bench/trace_summary.py): a
# collective far longer than its minimum is waiting for another rank; the rank whose collectives stay
# near their minimum is the one the others wait for; host busy near 100% of the window: host-bound.
set -u
out=${1:?OUT}; size=${2:?SIZE}; overrides=${3:-}
mkdir -p "$out/probe"
# shellcheck disable=SC2086  # the overrides are words
PROFILE_TRACE=1 timeout "${RUN_TIMEOUT:-420}" python3 bench/profile_step.py "$out/probe" model="gpt2-$size" \
  train.eval_every=0 checkpoint.every=0 train.timeline_steps=0 train.compile=true $overrides name=probe \
  > "$out/probe/run.log" 2>&1 || { echo "profile failed or cut off"; tail -5 "$out/probe/run.log"; }
head -1 "$out/probe/profile_probe.txt" 2>/dev/null
python3 bench/trace_summary.py "$out"/probe/trace_probe_rank*.json.gz | tee "$out/probe/summary.txt"
