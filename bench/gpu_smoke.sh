#!/usr/bin/env bash
# GPU smoke run of the pipeline issue, for the device machine (2 GPUs): gpt2-small with the
# gpt2-pipeline recipe on 2 GPUs (NCCL, bf16), the same model on 1 GPU, and pp=1 x dp=2.
# Usage (repository root): bash bench/gpu_smoke.sh OUT_DIR
set -u
out=${1:?usage: gpu_smoke.sh OUT_DIR}
mkdir -p "$out"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), torch.cuda.device_count())"
python3 -c "from torch.distributed.pipelining.schedules import ScheduleGPipe as S; print('eval:', hasattr(S, 'eval'))"
run() {  # name, overrides...
  local name=$1; shift
  echo "=== $name: $*"
  python3 -m mpcli train conf=gpt2-pipeline train.steps=50 train.eval_every=25 train.compile=false "$@" \
    --quiet --run-dir "$out/$name" || tail -30 "$out/$name"/logs/rank_*.log
  cp "$out/$name/metrics.jsonl" "$out/$name.metrics.jsonl" 2>/dev/null
}
run pp2 parallel.pp=2
run pp1 parallel.pp=1 parallel.microbatches=8
run dp2 parallel.pp=1 parallel.dp=2 parallel.microbatches=4
