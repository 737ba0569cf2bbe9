"""Worker tasks for the checkpoint tests: run inside processes started by `mpcli.launch.launch`.

`run_cases` runs every case listed in run_dir/cases.json (several layouts per spawn); the injected
failures wrap the real training loop. Results go to files that the tests judge.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.tensor import DTensor

from mpcli.config.schema import RunConfig
from mpcli.topology import ParallelDims
from mpcli.train.loop import TrainResult, _samplers, checkpointing, restore, train
from mpcli.train.step import Trainer

CASES = "cases.json"


def case_run(run: RunConfig, case: dict[str, Any]) -> RunConfig:
    """The base run under a case's layout; dp layouts shrink microbatches to keep the global batch."""
    pp, dp, tp = case["pp"], case["dp"], case.get("tp", 1)
    train_cfg = replace(run.train, microbatch_size=run.train.microbatch_size // dp, **case["train"])
    return replace(
        run,
        parallel=replace(run.parallel, pp=pp, dp=dp, tp=tp, schedule=case["schedule"]),
        train=train_cfg,
        checkpoint=replace(run.checkpoint, **case.get("checkpoint", {})),
        model=replace(run.model, init_from=case.get("init_from")),
    )


def _dump_initial_params(run: RunConfig, dims: ParallelDims, device: torch.device, out: Path) -> None:
    """Build, restore (init_from or resume), and save this rank's full parameters and RNG state
    without training."""
    trainer = Trainer(run, dims=dims, device=device)
    train_data, _ = _samplers(run, dims)
    checkpointer, _ = checkpointing(run, trainer, train_data, run_dir=out)
    restore(run, trainer, checkpointer)
    params = {
        name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu().clone()
        for part in trainer.parts
        for name, p in part.named_parameters()
    }
    torch.save(params, out / f"params.{dist.get_rank()}.pt")
    torch.save(torch.get_rng_state(), out / f"rng.{dist.get_rank()}.pt")


def run_cases(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> None:
    for case in json.loads((run_dir / CASES).read_text()):
        crun = case_run(run, case)
        p = crun.parallel
        cdims = ParallelDims(pp=p.pp, dp=p.dp, tp=p.tp, device_type=device.type)
        out = run_dir / case["name"]
        out.mkdir(exist_ok=True)
        if case.get("params_only"):
            _dump_initial_params(crun, cdims, device, out)
            continue
        result = train(crun, dims=cdims, device=device, run_dir=out)
        (out / f"losses.{dist.get_rank()}.json").write_text(json.dumps(result.losses))


def train_killed_in_second_save(
    run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path
) -> TrainResult:
    """Rank 1 dies by SIGKILL while writing its shard of the second checkpoint."""
    original = FileSystemWriter.write_data
    calls = []

    def write_data(self: FileSystemWriter, plan: Any, planner: Any) -> Any:
        calls.append(1)
        if dist.get_rank() == 1 and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, plan, planner)

    FileSystemWriter.write_data = write_data  # type: ignore[method-assign]
    return train(run, dims=dims, device=device, run_dir=run_dir)
