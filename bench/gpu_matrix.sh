#!/usr/bin/env bash
# Issue 6's whole matrix on one 4-GPU machine, run in lanes on disjoint GPUs so it fits the device time:
#   phase 1, side by side: GPU 0: gpt2-medium and gpt2-large on one GPU; GPU 3: gpt2-xl on one GPU;
#                          GPUs 1,2: gpt2-xl pp2, then gpt2-large tp2 (sequence parallel; then async TP)
#   phase 2, all four GPUs: gpt2-large pp2 x tp2, gpt2-xl pp4 (the fastest layout, then the memory
#                          target's) and the gpt-7b recipe (no reference: it does not fit one GPU; MFU only)
# Each lane measures its references on its own first GPU just before its runs; phase 2 reuses phase 1's
# (same machine, same card type). Lanes share the host's CPUs, which the pipeline runs lean on: the
# ratios are side by side but not alone on the machine.
# Usage (repository root): bash bench/gpu_matrix.sh OUT; it outlasts one 10-minute command, so detach it:
#   setsid nohup bash bench/gpu_matrix.sh /tmp/m > /tmp/m.log 2>&1 &
#   (later calls) cat /tmp/m/table.md; test -f /tmp/m/done
# Environment as in gpu_bench.sh (STEPS, WARMUP, RUN_TIMEOUT).
set -u
out=${1:?OUT}
mkdir -p "$out"
lane() {  # NAME GPUS SIZES LAYOUTS...: gpu_bench.sh on those GPUs, one (SIZES, LAYOUT) pair per argument pair
  local name=$1 gpus=$2; shift 2
  while (( $# >= 2 )); do
    CUDA_VISIBLE_DEVICES=$gpus bash bench/gpu_bench.sh "$out/$name" "$1" "$2"
    shift 2
  done > "$out/$name.log" 2>&1
}
lane single0 0 medium none large none &
lane single3 3 xl none &
lane pair12 1,2 xl pp2 large "tp2;tp2async" &
wait
cat "$out"/single0/table.md "$out"/single3/table.md "$out"/pair12/table.md > "$out/table.md" 2>/dev/null
echo "phase 1 done $(date +%T)"

mkdir -p "$out/refs" && cp "$out"/single0/ref_large.json "$out"/single3/ref_xl.json "$out/refs/" 2>/dev/null
REF_DIR=$out/refs bash bench/gpu_bench.sh "$out/all4" large pp2tp2 > "$out/all4.log" 2>&1
REF_DIR=$out/refs bash bench/gpu_bench.sh "$out/all4" xl "pp4;pp4mem" >> "$out/all4.log" 2>&1
bash bench/gpu_bench.sh "$out/all4" gpt-7b >> "$out/all4.log" 2>&1
cat "$out/all4/table.md" >> "$out/table.md"
echo "phase 2 done $(date +%T)"
touch "$out/done"
