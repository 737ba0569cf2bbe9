"""One row of bench/gpu_bench.sh's table: an mpcli run's metrics against the reference.

Usage: python3 bench/bench_row.py REF_JSON METRICS_JSONL NAME WARMUP_STEPS WALL_SECONDS
Means over the steps after WARMUP_STEPS; a run cut off early reports the steps it finished. REF_JSON "-":
a model with no single-GPU reference (one that does not fit one GPU), so no ratio.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(ref: dict | None, records: list[dict], name: str, warmup: int, wall: str) -> str:
    steps = [r for r in records if "loss" in r][warmup:]
    if not steps:
        return f"| {name} | no steps after warm-up | | | | {wall} s | |"
    per_gpu = sum(r["tokens_per_s_per_device"] for r in steps) / len(steps)
    mfu = sum(r["mfu"] for r in steps) / len(steps)
    memory = max(r["max_mem_gb"] for r in steps)
    if ref is None:
        ratio, reference = "-", "no single-GPU reference"
    else:
        ratio = f"{per_gpu / ref['tokens_per_s']:.2f}x"
        tokens, ref_mfu, ref_memory = ref["tokens_per_s"], 100 * ref["mfu"], ref["max_mem_gb"]
        reference = f"ref {tokens:,.0f} tok/s, {ref_mfu:.1f}%, {ref_memory:.1f} GB"
    return (
        f"| {name} | {per_gpu:,.0f} | {100 * mfu:.1f}% | {memory:.1f} GB | {ratio} "
        f"| {len(steps)} steps, {wall} s | {reference} |"
    )


def main() -> None:
    ref_file, metrics, name, warmup, wall = sys.argv[1:]
    path = Path(metrics)
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    ref = None if ref_file == "-" else json.loads(Path(ref_file).read_text())
    print(row(ref, records, name, int(warmup), wall))


if __name__ == "__main__":
    main()
