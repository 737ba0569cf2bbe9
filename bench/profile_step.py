"""Profile training steps of one layout: `python bench/run.py profile OUT [--trace] k=v ...`.

Launches the layout through mpcli (same code path as `mpcli train`), runs 5 warm-up steps, then
profiles 3 steps queued back to back with torch.profiler and writes rank 0's top operators by self CPU
and self CUDA time to OUT/profile_<name>.txt (`name=` is one of the overrides). With `trace` every
rank's timeline goes to OUT/trace_<name>_rank<r>.json.gz (`run.py trace-summary` reads them): a
collective's duration on one rank is mostly its wait for the others, so comparing ranks shows which
one the step waits for.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from mpcli.config.compose import compose
from mpcli.config.schema import RunConfig
from mpcli.launch import launch
from mpcli.topology import ParallelDims
from mpcli.train.loop import _samplers
from mpcli.train.step import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_task(
    run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path, trace: bool = False
) -> None:
    trainer = Trainer(run, dims=dims, device=device)
    data, _ = _samplers(run, dims)
    for step in range(5):
        trainer.train_step(*data.batch(step))
    _sync(device)
    start = time.perf_counter()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        # Queued back to back as in training (no host wait between steps), read once at the end.
        queued = [trainer.launch_step(*data.batch(step)) for step in range(5, 8)]
        _sync(device)
    per_step = (time.perf_counter() - start) / 3
    for stats in queued:
        stats.read()
    rank = dist.get_rank()
    if rank == 0:
        table_cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        table_cuda = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15)
        text = f"step time (profiled) {per_step:.3f} s\n{table_cpu}\n{table_cuda}\n"
        (run_dir.parent / f"profile_{run.name}.txt").write_text(text)
    if trace:  # every rank's timeline (chrome://tracing, Perfetto): who waits
        prof.export_chrome_trace(str(run_dir.parent / f"trace_{run.name}_rank{rank}.json.gz"))


def main(out: Path, overrides: list[str], *, trace: bool = False) -> None:
    run = compose("gpt2-pipeline", overrides)
    launch(run, out / run.name, task=functools.partial(profile_task, trace=trace))
