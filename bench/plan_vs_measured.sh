#!/usr/bin/env bash
# `mpcli plan`'s peak-memory estimate next to the measured peak (torch.cuda.max_memory_allocated, the
# max over ranks, from metrics.jsonl's max_mem_gb) for a few GPT-2 layouts, 5 steps each, bf16.
# Layouts needing more GPUs than are visible are skipped. Prints one line per layout; keeps each run's
# metrics.jsonl in OUT_DIR. Usage (repository root, on a GPU machine): bash bench/plan_vs_measured.sh OUT_DIR
set -u
out=${1:?usage: plan_vs_measured.sh OUT_DIR}
mkdir -p "$out/runs"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), '$gpus GPUs')"
# Eager: the activation model of `mpcli plan` describes eager autograd, not compiled graphs.
common="train.steps=5 train.eval_every=0 train.timeline_steps=0 checkpoint=none train.compile=false"

estimate() {  # overrides... -> "peak per_rank..." in GiB from the plan (no processes)
  python3 - "$@" <<'PY'
import sys
from mpcli.config.compose import compose
from mpcli.estimate.layout import estimate
from mpcli.estimate.profile import profile_model
from mpcli.plan import with_split

conf, *overrides = sys.argv[1:]
run = with_split(compose(conf.removeprefix("conf="), overrides), cuda_devices=1)
layout = estimate(run, profile_model(run), bf16=run.train.precision != "fp32")
print(f"{layout.peak / 2**30:.2f}", " ".join(f"{m.total / 2**30:.2f}" for m in layout.memory))
PY
}

suggested_top() {  # overrides of the best layout `mpcli plan --suggest` finds for gpt2-xl on 4 x 80 GiB
  python3 - <<'PY'
from mpcli.config.compose import compose
from mpcli.estimate.layout import CostModel
from mpcli.estimate.profile import profile_model
from mpcli.estimate.suggest import suggest

run = compose("gpt2-pipeline", ["model=gpt2-xl"])
best = suggest(run, profile_model(run), gpus=4, gpu_mem_gib=80, cost=CostModel(), bf16=True)[0][0].run
p = best.parallel
print(f"parallel.pp={p.pp} parallel.tp={p.tp} parallel.dp={p.dp} parallel.schedule={p.schedule} "
      f"parallel.virtual_stages={p.virtual_stages} parallel.microbatches={p.microbatches} "
      f"parallel.sequence_parallel={p.sequence_parallel} train.microbatch_size={best.train.microbatch_size}")
PY
}

measured() {  # metrics.jsonl -> the largest max_mem_gb
  python3 -c "import json,sys; print(max(json.loads(l).get('max_mem_gb') or 0 for l in open(sys.argv[1])))" "$1"
}

run() {  # name, world size, overrides...
  local name=$1 world=$2; shift 2
  # ONLY=REGEX runs the matching layouts only (e.g. the 4-GPU ones on a second machine).
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return; fi
  if [ "$world" -gt "$gpus" ]; then echo "skip  $name (needs $world GPUs)"; return; fi
  read -r plan per_rank < <(estimate "$@" $common)
  python3 -m mpcli train "$@" $common --quiet --run-dir "$out/runs/$name" >"$out/$name.log" 2>&1 \
    || { echo "FAIL  $name: $(tail -3 "$out/$name.log")"; return; }
  cp "$out/runs/$name/metrics.jsonl" "$out/$name.metrics.jsonl"
  local got; got=$(measured "$out/runs/$name/metrics.jsonl")
  python3 -c "p,m=float('$plan'),float('$got'); print(f'{\"$name\":<28} plan {p:7.2f} GiB  measured {m:7.2f} GiB  error {(p-m)/m:+6.1%}  (plan per pp rank: $per_rank)')"
}

run small-pp1-m8         1 conf=gpt2-pipeline parallel.pp=1 parallel.microbatches=8
run small-pp2-1f1b       2 conf=gpt2-pipeline
run small-pp2-gpipe      2 conf=gpt2-pipeline parallel.schedule=gpipe
run small-pp2-interleave 2 conf=gpt2-pipeline parallel.schedule=interleaved-1f1b parallel.virtual_stages=2
run small-pp2-zbv        2 conf=gpt2-pipeline parallel.schedule=zbv parallel.virtual_stages=2
run small-dp2-fsdp       2 conf=gpt2-pipeline parallel.pp=1 parallel.dp=2 parallel.microbatches=4
run small-pp2-tp2-sp     4 conf=gpt2-hybrid
run medium-pp4-1f1b      4 conf=gpt2-pipeline model=gpt2-medium parallel.pp=4
# The top layout of `mpcli plan --suggest --gpus 4 --gpu-mem 80 conf=gpt2-pipeline model=gpt2-xl`.
run xl-suggested-top     4 conf=gpt2-pipeline model=gpt2-xl $(suggested_top)
run xl-pp4-zbv           4 conf=gpt2-pipeline model=gpt2-xl parallel.pp=4 parallel.schedule=zbv parallel.virtual_stages=2 parallel.microbatches=8
rm -rf "$out/runs"
