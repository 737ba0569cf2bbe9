#!/usr/bin/env bash
# One device call: the plain single-GPU reference and mpcli's layouts of the same model, side by side.
# Usage (repository root): bash bench/gpu_bench.sh OUT SIZE "LAYOUT1;LAYOUT2;..."
#   SIZE: medium | large | xl; a LAYOUT is mpcli overrides, e.g. "parallel.pp=2 parallel.microbatches=8",
#   optionally with environment settings for that run first, e.g. "TORCHINDUCTOR_CPP_WRAPPER=1 parallel.pp=2"
# Prints one table row per run: tok/s per GPU, MFU, peak memory per GPU, ratio to the reference.
set -u
out=${1:?OUT}; size=${2:?SIZE}; layouts=${3:?LAYOUTS}
declare -A shape=([medium]="24 16 1024" [large]="36 20 1280" [xl]="48 25 1600")
read -r layers heads dim <<< "${shape[$size]}"
mkdir -p "$out"
python3 bench/reference_gpt2.py --layers "$layers" --heads "$heads" --dim "$dim" --batch 16 > "$out/ref_$size.json" \
  || { echo "reference failed"; exit 1; }
echo "reference gpt2-$size: $(cat "$out/ref_$size.json")"
i=0
IFS=';' read -ra runs <<< "$layouts"
for layout in "${runs[@]}"; do
  i=$((i + 1))
  envs=(); args=()
  for word in $layout; do
    if [[ $word =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$word"); else args+=("$word"); fi
  done
  env "${envs[@]}" python3 -m mpcli train conf=gpt2-pipeline model=gpt2-$size train.steps=30 train.eval_every=0 \
    train.timeline_steps=0 checkpoint.every=0 train.compile=true "${args[@]}" --quiet --run-dir "$out/run$i" \
    > "$out/run$i.log" 2>&1 || { echo "FAILED: $layout"; tail -5 "$out/run$i.log"; tail -20 "$out/run$i"/logs/rank_0.log; }
  python3 - "$out/ref_$size.json" "$out/run$i/metrics.jsonl" "$layout" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l] if __import__("os").path.exists(sys.argv[2]) else []
steps = rows[10:]
if steps:
    per_gpu = sum(r["tokens_per_s_per_device"] for r in steps) / len(steps)
    mfu = sum(r["mfu"] for r in steps) / len(steps)
    print(f"| {sys.argv[3]} | {per_gpu:,.0f} | {100 * mfu:.1f}% | {steps[-1]['max_mem_gb']:.1f} GB | "
          f"{per_gpu / ref['tokens_per_s']:.2f}x | ref {ref['tokens_per_s']:,.0f} tok/s, {100 * ref['mfu']:.1f}%, {ref['max_mem_gb']:.1f} GB |")
PY
done
