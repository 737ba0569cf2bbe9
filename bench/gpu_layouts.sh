#!/usr/bin/env bash
# Layout smoke runs on a 4-GPU machine (NCCL, bf16): tensor, hybrid and 3-D-like GPT-2 layouts, every
# pipeline schedule family, and the CNN / MLP recipes. Copies each run's metrics.jsonl to OUT.
# Usage (repository root): bash bench/gpu_layouts.sh OUT_DIR
set -u
out=${1:?usage: gpu_layouts.sh OUT_DIR}
mkdir -p "$out/runs"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), torch.cuda.device_count())"
run() {  # name, overrides...
  local name=$1; shift
  echo "=== $name: $*"
  python3 -m mpcli train "$@" --quiet --run-dir "$out/runs/$name" 2>&1 | grep -v '^[┃│┏┡└┌]' \
    || tail -20 "$out/runs/$name"/logs/rank_*.log
  cp "$out/runs/$name/metrics.jsonl" "$out/$name.jsonl" 2>/dev/null
}
common="train.steps=40 train.eval_every=20 train.compile=false"  # as first measured: eager
run tp2     conf=gpt2-tensor $common
run pp2tp2  conf=gpt2-hybrid $common
run dp2tp2  conf=gpt2-hybrid parallel.pp=1 parallel.dp=2 parallel.microbatches=4 $common
run pp4-i   conf=gpt2-pipeline parallel.pp=2 parallel.dp=2 parallel.schedule=interleaved-1f1b parallel.virtual_stages=2 $common
run pp2-zbv conf=gpt2-pipeline parallel.schedule=zbv parallel.virtual_stages=2 parallel.dp=2 $common
run cnn     conf=cnn-pipeline train.steps=100 train.eval_every=50
run mlp     conf=mlp-tensor train.steps=100 train.eval_every=50
rm -rf "$out/runs"
