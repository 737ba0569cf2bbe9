#!/usr/bin/env bash
# One device call: the plain single-GPU reference and mpcli's layouts of the same model, side by side.
# Usage (repository root): bash bench/gpu_bench.sh OUT SIZE ["LAYOUT1;LAYOUT2;..."]
#   SIZE: medium | large | xl.
#   A LAYOUT is a name from the table below or mpcli overrides, e.g. "parallel.pp=2 parallel.microbatches=8",
#   optionally with environment settings for that run first, e.g. "TORCHINDUCTOR_CPP_WRAPPER=1 parallel.pp=2".
#   Without LAYOUTS: every named layout this machine's GPUs and the model's heads allow.
# Environment: STEPS (30), WARMUP (10: steps left out of the means), RUN_TIMEOUT (s per mpcli run, 420;
#   a fresh machine needs ~100-120 s to start and compile a run before its first step).
# Prints one table row per run (tok/s per GPU, MFU, peak memory per GPU, ratio to the reference, wall
# time); the rows also go to OUT/table.md. A run cut off by RUN_TIMEOUT reports the steps it finished.
set -u
out=${1:?OUT}; size=${2:?SIZE}; layouts=${3:-}
steps=${STEPS:-30}; warmup=${WARMUP:-10}; run_timeout=${RUN_TIMEOUT:-420}
declare -A shape=([medium]="24 16 1024" [large]="36 20 1280" [xl]="48 25 1600")
read -r layers heads dim <<< "${shape[$size]}"
declare -A named=(
  [none]="parallel.pp=1 parallel.microbatches=1 train.microbatch_size=16"
  [pp2]="parallel.pp=2 parallel.microbatches=16 train.microbatch_size=4 parallel.balance=flops"
  [pp4]="parallel.pp=4 parallel.schedule=interleaved-1f1b parallel.virtual_stages=2 parallel.microbatches=16 train.microbatch_size=4 parallel.balance=flops"
  [tp2]="parallel=tensor train.microbatch_size=16"
  [pp2tp2]="parallel=hybrid parallel.microbatches=8 train.microbatch_size=4 parallel.balance=flops"
)
if [[ -z $layouts ]]; then
  gpus=$(nvidia-smi -L | wc -l)
  layouts="none"
  (( gpus >= 2 )) && layouts+=";pp2"
  (( gpus >= 2 && heads % 2 == 0 )) && layouts+=";tp2"
  (( gpus >= 4 )) && layouts+=";pp4"
  (( gpus >= 4 && heads % 2 == 0 )) && layouts+=";pp2tp2"
fi
mkdir -p "$out"
python3 bench/reference_gpt2.py --layers "$layers" --heads "$heads" --dim "$dim" --batch 16 --steps "$steps" \
  --warmup "$warmup" > "$out/ref_$size.json" || { echo "reference failed"; exit 1; }
echo "reference gpt2-$size: $(cat "$out/ref_$size.json")"
i=0
IFS=';' read -ra runs <<< "$layouts"
for layout in "${runs[@]}"; do
  i=$((i + 1))
  overrides=${named[$layout]:-$layout}
  envs=(); args=()
  for word in $overrides; do
    if [[ $word =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$word"); else args+=("$word"); fi
  done
  start=$(date +%s)
  env "${envs[@]}" timeout "$run_timeout" python3 -m mpcli train conf=gpt2-pipeline model="gpt2-$size" \
    train.steps="$steps" train.eval_every=0 train.timeline_steps=0 checkpoint.every=0 train.compile=true \
    "${args[@]}" --quiet --run-dir "$out/run$i" > "$out/run$i.log" 2>&1 \
    || { echo "FAILED or cut off: $layout"; tail -3 "$out/run$i.log"; tail -5 "$out/run$i"/logs/rank_0.log; }
  python3 - "$out/ref_$size.json" "$out/run$i/metrics.jsonl" "gpt2-$size $layout" "$warmup" \
    "$(( $(date +%s) - start ))" <<'PY' | tee -a "$out/table.md"
import json, os, sys
ref_file, metrics, name, warmup, wall = sys.argv[1:]
ref = json.load(open(ref_file))
rows = [json.loads(line) for line in open(metrics) if '"loss"' in line] if os.path.exists(metrics) else []
steps = rows[int(warmup):]
if steps:
    per_gpu = sum(r["tokens_per_s_per_device"] for r in steps) / len(steps)
    mfu = sum(r["mfu"] for r in steps) / len(steps)
    print(f"| {name} | {per_gpu:,.0f} | {100 * mfu:.1f}% | {max(r['max_mem_gb'] for r in steps):.1f} GB | "
          f"{per_gpu / ref['tokens_per_s']:.2f}x | {len(steps)} steps, {wall} s | "
          f"ref {ref['tokens_per_s']:,.0f} tok/s, {100 * ref['mfu']:.1f}%, {ref['max_mem_gb']:.1f} GB |")
else:
    print(f"| {name} | no steps after warm-up ({len(rows)} in all) | | | | {wall} s | |")
PY
done
