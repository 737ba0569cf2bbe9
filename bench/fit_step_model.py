"""Fit `mpcli plan`'s step-time constants to measured runs: `python bench/run.py fit-step-model [CSV]`.

Reads bench/measured_steps.csv (one row per measured GPU run: recipe, overrides, GPUs, tokens/s per GPU,
card, torch version, date and the bench subcommand that measured it; every figure is in
docs/performance.md), works out each run's step-time terms (estimate/layout.py: FLOPs, stage passes,
tensor-parallel collectives, bubble, bytes sent) and fits efficiency, the bandwidth inside a node and
the fixed costs (per stage pass on the GPU; on the host per collective, per block pass and per step)
that minimise the relative error (the bandwidth between nodes stays assumed: no multi-node run is in
the file). The grid takes about a minute. Prints the fit, then each run's measured step against the fit
and against `CostModel()` as it stands. No GPU needed.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from dataclasses import replace
from pathlib import Path

from mpcli.config.compose import compose
from mpcli.estimate.layout import CostModel, LayoutEstimate, estimate
from mpcli.estimate.profile import profile_model

MEASURED = Path(__file__).with_name("measured_steps.csv")


def measured_runs(path: Path = MEASURED) -> list[tuple[LayoutEstimate, float, str]]:
    """(estimate, measured step in seconds, label) for each row of `path`; bf16 and compiled, as run."""
    runs = []
    with path.open() as f:
        for row in csv.DictReader(f):
            overrides = ["train.compile=true", "train.precision=bf16", *row["overrides"].split()]
            run = compose(row["recipe"], overrides)
            layout = estimate(run, profile_model(run), bf16=True, compiled=True)
            p = run.parallel
            tokens = run.train.microbatch_size * p.microbatches * p.dp * run.model.seq_len
            step = tokens / (float(row["tokens_per_s_per_gpu"]) * int(row["gpus"]))
            runs.append((layout, step, f"{row['recipe']} {row['overrides']}".strip()))
    return runs


def rms_error(runs: list[tuple[LayoutEstimate, float, str]], cost: CostModel) -> float:
    """Root mean square of the relative error of `cost`'s step estimates."""
    return math.sqrt(statistics.fmean((layout.step_time(cost) / step - 1) ** 2 for layout, step, _ in runs))


def fit(runs: list[tuple[LayoutEstimate, float, str]], base: CostModel) -> CostModel:
    """Efficiency, intra-node bandwidth and the fixed costs (per pass, per collective, per block pass,
    per step) with the least root-mean-square relative error, on a grid (the model's max() makes this
    no linear least-squares problem)."""
    grid = itertools.product(
        [e / 100 for e in range(42, 59, 4)],  # efficiency
        [100.0, 150.0, 200.0, 300.0],  # GB/s inside a node, not overlapped
        [c * 0.5e-3 for c in range(0, 11)],  # s per pass: 0..5 ms
        [h * 0.1e-3 for h in range(3, 11)],  # s of host per collective: 0.3..1.0 ms
        [b * 0.1e-3 for b in range(0, 13)],  # s of host per block pass: 0..1.2 ms
        [f * 4e-3 for f in range(0, 6)],  # s of host per step: 0..20 ms
    )
    models = (
        replace(
            base,
            efficiency=e,
            intra_node_gb_s=bw,
            pass_overhead_s=c,
            tp_collective_s=h,
            block_pass_s=b,
            step_host_s=f,
        )  # fmt: skip
        for e, bw, c, h, b, f in grid
    )
    return min(models, key=lambda cost: rms_error(runs, cost))


def main(path: Path = MEASURED) -> None:
    runs = measured_runs(path)
    now = CostModel()
    fitted = fit(runs, now)
    print(f"fit: efficiency {fitted.efficiency:.2f}, {fitted.intra_node_gb_s:g} GB/s inside a node, "
          f"{fitted.pass_overhead_s * 1e3:.2f} ms per pass, "
          f"{fitted.tp_collective_s * 1e3:.2f} ms per tensor-parallel collective, "
          f"{fitted.block_pass_s * 1e3:.2f} ms of host per block pass, "
          f"{fitted.step_host_s * 1e3:.0f} ms of host per step; rms error "
          f"{rms_error(runs, fitted):.1%} (CostModel() now: {rms_error(runs, now):.1%})")  # fmt: skip
    print(f"{'measured s':>10} {'fit':>7} {'CostModel()':>12}  run")
    for layout, step, label in runs:
        ours, current = layout.step_time(fitted), layout.step_time(now)
        print(f"{step:10.3f} {ours / step - 1:+7.0%} {current / step - 1:+12.0%}  {label}")
