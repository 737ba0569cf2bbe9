"""Profile training steps of one layout on rank 0: `python3 bench/profile_step.py OUT k=v ...`.

Launches the layout through mpcli (same code path as `mpcli train`), runs a few warm-up steps, then
profiles 3 steps with torch.profiler on global rank 0 and writes the top operators by self CPU and
self CUDA time to OUT/profile_<layout>.txt.
"""

from __future__ import annotations

import sys
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


def profile_task(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> None:
    trainer = Trainer(run, dims=dims, device=device)
    data, _ = _samplers(run, dims)
    for step in range(5):
        trainer.train_step(*data.batch(step))
    torch.cuda.synchronize()
    start = time.perf_counter()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=activities) as prof:
        for step in range(5, 8):
            trainer.train_step(*data.batch(step))
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / 3
    if dist.get_rank() == 0:
        table_cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        table_cuda = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15)
        text = f"step time (profiled) {per_step:.3f} s\n{table_cpu}\n{table_cuda}\n"
        (run_dir.parent / f"profile_{run.name}.txt").write_text(text)


if __name__ == "__main__":
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    run = compose("gpt2-pipeline", overrides)
    launch(run, out / run.name, task=profile_task)
