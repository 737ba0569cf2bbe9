"""One rank of a tensor/data-parallel layout on one device, its collectives faked: what that rank's
step costs without communication. `python bench/run.py one-rank k=v ...` prints one JSON line.

Rank 0 runs alone under torch's fake process group (collectives return at once, without moving data),
so the step time is the rank's own compute plus the host's work to issue it. Set against the real
layout's step time (`run.py compare`), the difference is what communication and waiting cost; against
the plain reference, the rest is the price of sharded matmuls and DTensor's host work. pp must be 1: a
pipeline stage's receives would return garbage shapes. With tp = dp = 1 there are no collectives: the
result is an ordinary one-GPU step of mpcli.

`async_tp_check` (with parallel.async_tp=true) runs under symmetric memory's test mode, where the fused
ops fall back to plain collectives, and counts the fused all-gather/matmul and matmul/reduce-scatter
ops in one profiled step: whether Inductor's micro-pipeline pass found the sequence-parallel pairs.
Counts need a CUDA build of torch (the pass skips builds without NCCL).

`profile_dir` profiles 2 more steps: one_rank_trace.json.gz (`run.py trace-summary` reads it: GPU busy
vs host busy) and one_rank_ops.txt (operators by self CPU time). `sync_debug` prints where a step makes
the host wait for the GPU (torch.cuda's sync debug mode), one stack per place.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile
from torch.testing._internal.distributed.fake_pg import FakeStore

from bench.profile_step import _sync
from mpcli.config.compose import compose
from mpcli.config.validate import resolve_device
from mpcli.topology import ParallelDims
from mpcli.train.loop import _samplers
from mpcli.train.step import Trainer

FUSED_OPS = ("symm_mem::fused_all_gather_matmul", "symm_mem::fused_matmul_reduce_scatter")


def fused_op_counts(trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, int]:
    """How many times each fused async-TP op ran in one step."""
    with profile() as prof:
        trainer.train_step(*batch)
    counts = {event.key: event.count for event in prof.key_averages() if event.key in FUSED_OPS}
    return {op: counts.get(op, 0) for op in FUSED_OPS}


def profile_steps(trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]], out: Path) -> None:
    """Profile `batches` queued back to back; a trace and an operator table into `out`."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        queued = [trainer.launch_step(*batch) for batch in batches]
        for stats in queued:
            stats.read()
    out.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(out / "one_rank_trace.json.gz"))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=90)
    (out / "one_rank_ops.txt").write_text(table)


def sync_stacks(trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> list[str]:
    """The distinct Python stacks from which one step synchronizes with the GPU."""
    stacks: dict[str, None] = {}

    def record(message: Warning | str, *args: object, **kwargs: object) -> None:
        if "synchronizing" in str(message):
            stacks["".join(traceback.format_stack(limit=12)[:-1])] = None

    # Switched on outside the capture: the switch itself warns that it is a prototype.
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record  # type: ignore[assignment]
            trainer.launch_step(*batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return list(stacks)


def measure(
    overrides: list[str],
    *,
    steps: int,
    warmup: int,
    async_tp_check: bool = False,
    profile_dir: Path | None = None,
    sync_debug: bool = False,
) -> dict[str, object]:
    """Time `steps` steps queued back to back after `warmup` ones; the checks above on request."""
    run = compose("gpt2-pipeline", overrides)
    p = run.parallel
    if p.pp != 1:
        raise SystemExit("one-rank: parallel.pp must be 1 (pipeline receives cannot be faked)")
    device_type = resolve_device(run.topology.device, torch.cuda.device_count())
    dims = ParallelDims(pp=1, dp=p.dp, tp=p.tp, device_type=device_type)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=dims.world_size)
    device = dims.device(0)
    trainer = Trainer(run, dims=dims, device=device)
    data, _ = _samplers(run, dims)
    for step in range(warmup):
        trainer.train_step(*data.batch(step))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    queued = [trainer.launch_step(*data.batch(step)) for step in range(warmup, warmup + steps)]
    host_s = (time.perf_counter() - start) / steps
    _sync(device)
    step_s = (time.perf_counter() - start) / steps
    for stats in queued:
        stats.read()
    tokens = p.microbatches * run.train.microbatch_size * run.model.seq_len  # this rank's batch
    result: dict[str, object] = {
        "layout": " ".join(overrides),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "step_ms": round(step_s * 1e3, 2),
        "host_ms": round(host_s * 1e3, 2),
        # Tokens per second of this rank: a tp group shares one batch, so per GPU it is this / tp.
        "tok_s_per_gpu": round(tokens / step_s / p.tp),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if torch.cuda.is_available()
        else None,
    }
    after = warmup + steps
    if async_tp_check:
        result["fused_ops"] = fused_op_counts(trainer, data.batch(after))
    if profile_dir is not None:
        profile_steps(trainer, [data.batch(after + 1), data.batch(after + 2)], profile_dir)
    if sync_debug and device.type == "cuda":
        for stack in sync_stacks(trainer, data.batch(after + 3)):
            print(f"--- host waits for the GPU at:\n{stack}", file=sys.stderr)
    return result


def main(
    overrides: list[str],
    *,
    steps: int = 10,
    warmup: int = 5,
    async_tp_check: bool = False,
    profile_dir: Path | None = None,
    sync_debug: bool = False,
) -> None:
    context = contextlib.nullcontext()
    if async_tp_check:
        from torch.distributed._symmetric_memory import _test_mode

        context = _test_mode()  # fused ops take their fallbacks: no real symmetric memory exists
    options = {"async_tp_check": async_tp_check, "profile_dir": profile_dir, "sync_debug": sync_debug}
    try:
        with context:
            print(json.dumps(measure(overrides, steps=steps, warmup=warmup, **options)), flush=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
