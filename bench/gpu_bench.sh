#!/usr/bin/env bash
# One device call: the plain single-GPU reference and mpcli's layouts of the same model, side by side.
# Usage (repository root): bash bench/gpu_bench.sh OUT SIZES ["LAYOUT1;LAYOUT2;..."]
#   SIZES: one or more of medium, large, xl, e.g. "medium large xl" (each with its own reference), or a
#   recipe name such as gpt-7b: its own model and layout ("recipe"), no reference (MFU only).
#   A LAYOUT is a name from the table below or mpcli overrides, e.g. "parallel.pp=2 parallel.microbatches=8",
#   optionally with environment settings for that run first, e.g. "TORCHINDUCTOR_CPP_WRAPPER=1 parallel.pp=2".
#   Without LAYOUTS: every named layout this machine's GPUs and the model's heads allow.
# Environment: STEPS (30), WARMUP (10: steps left out of the means), RUN_TIMEOUT (s per mpcli run, 420;
#   a fresh machine needs ~100-120 s to start and compile a run before its first step), REF_DIR (reuse
#   the ref_SIZE.json found there instead of measuring the reference again).
# Prints one table row per run (tok/s per GPU, MFU, peak memory per GPU, ratio to the reference, wall
# time); the rows also go to OUT/table.md. A run cut off by RUN_TIMEOUT reports the steps it finished.
# The whole matrix outlasts one 10-minute device command: start it detached and collect the table later,
#   setsid nohup bash bench/gpu_bench.sh /tmp/bench "medium large xl" > /tmp/bench.log 2>&1 &
#   (later calls, same warm machine) cp /tmp/bench/table.md "$OUT/"; tail -3 /tmp/bench.log
set -u
out=${1:?OUT}; sizes=${2:?SIZES}; requested=${3:-}
steps=${STEPS:-30}; warmup=${WARMUP:-10}; run_timeout=${RUN_TIMEOUT:-420}
declare -A shape=([medium]="24 16 1024" [large]="36 20 1280" [xl]="48 25 1600")
# The fastest layouts measured (docs/performance.md, session 10): per-microbatch costs (stage passes,
# tensor-parallel collectives issued by the host) call for large microbatches; tp2 at 48 fits 80 GiB.
# pp4 at 32 x 16 is the step model's pick over the measured 16 x 16 (same memory, half the bubble).
# pp4mem is the memory target's layout: smaller microbatches, interleaved. tp2async: tp2 with torch's
# micro-pipelined TP (not yet measured on 2 GPUs; on GPT-2 it fuses the backward collectives only).
declare -A named=(
  [none]="parallel.pp=1 parallel.microbatches=1 train.microbatch_size=16"
  [pp2]="parallel.pp=2 parallel.microbatches=16 train.microbatch_size=16 parallel.balance=flops"
  [pp4]="parallel.pp=4 parallel.microbatches=32 train.microbatch_size=16 parallel.balance=flops"
  [pp4mem]="parallel.pp=4 parallel.schedule=interleaved-1f1b parallel.virtual_stages=2 parallel.microbatches=16 train.microbatch_size=4 parallel.balance=flops"
  [tp2]="parallel=tensor train.microbatch_size=48"
  [tp2async]="parallel=tensor train.microbatch_size=48 parallel.async_tp=true"
  [pp2tp2]="parallel=hybrid parallel.microbatches=8 train.microbatch_size=32 parallel.balance=flops"
  [recipe]=""
)
gpus=$(nvidia-smi -L | wc -l)
mkdir -p "$out"
i=0

bench_reference() {  # SIZE: the plain single-GPU reference, and the default layouts when none were asked for
  local size=$1 layers heads dim
  read -r layers heads dim <<< "${shape[$size]}"
  if [[ -z $layouts ]]; then
    layouts="none"
    (( gpus >= 2 )) && layouts+=";pp2"
    (( gpus >= 2 && heads % 2 == 0 )) && layouts+=";tp2"
    (( gpus >= 4 )) && layouts+=";pp4;pp4mem"
    (( gpus >= 4 && heads % 2 == 0 )) && layouts+=";pp2tp2"
  fi
  if [[ -n ${REF_DIR:-} && -s $REF_DIR/ref_$size.json ]]; then
    cp "$REF_DIR/ref_$size.json" "$out/"  # measured earlier on this machine (gpu_matrix.sh)
  else
    python3 bench/reference_gpt2.py --layers "$layers" --heads "$heads" --dim "$dim" --batch 16 \
      --steps "$steps" --warmup "$warmup" > "$out/ref_$size.json" || { echo "reference gpt2-$size failed"; return 1; }
  fi
  echo "reference gpt2-$size: $(cat "$out/ref_$size.json")"
}

bench_size() {  # SIZE: the reference, then each layout
  local size=$1 layouts=$requested conf=gpt2-pipeline model ref label  # bench_reference may set layouts
  if [[ -z ${shape[$size]:-} ]]; then  # a recipe name (e.g. gpt-7b): it fits no single GPU, so no reference
    conf=$size; model=(); ref=-; label=$size; layouts=${layouts:-recipe}
  else
    model=("model=gpt2-$size"); ref=$out/ref_$size.json; label=gpt2-$size
    bench_reference "$size" || return
  fi
  local runs layout overrides envs args word start
  IFS=';' read -ra runs <<< "$layouts"
  for layout in "${runs[@]}"; do
    i=$((i + 1))
    while [[ -e $out/run$i ]]; do i=$((i + 1)); done  # OUT may hold an earlier call's runs
    overrides=${named[$layout]-$layout}
    envs=(); args=()
    for word in $overrides; do
      if [[ $word =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$word"); else args+=("$word"); fi
    done
    start=$(date +%s)
    env "${envs[@]}" timeout "$run_timeout" python3 -m mpcli train conf="$conf" "${model[@]}" \
      train.steps="$steps" train.eval_every=0 train.timeline_steps=0 checkpoint.every=0 train.compile=true \
      "${args[@]}" --quiet --run-dir "$out/run$i" > "$out/run$i.log" 2>&1 \
      || { echo "FAILED or cut off: $layout"; tail -3 "$out/run$i.log"; tail -5 "$out/run$i"/logs/rank_0.log; }
    python3 bench/bench_row.py "$ref" "$out/run$i/metrics.jsonl" "$label $layout" "$warmup" \
      "$(( $(date +%s) - start ))" | tee -a "$out/table.md"
  done
}

for size in $sizes; do bench_size "$size"; done
