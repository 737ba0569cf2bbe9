"""Worker task for the estimate test: what one rank really holds after a training step."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from mpcli.config.schema import RunConfig
from mpcli.topology import ParallelDims
from mpcli.train.loop import _samplers
from mpcli.train.step import Trainer


def _bytes(tensors: list[torch.Tensor]) -> int:
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local)


def state_task(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> dict[str, int]:
    """Bytes of this rank's parameters, gradients and optimizer state after one step, and how many
    microbatch outputs its pipeline stages still hold (the plan's "outputs" term)."""
    trainer = Trainer(run, dims=dims, device=device)
    train_data, _ = _samplers(run, dims)
    trainer.train_step(*train_data.batch(0))
    params = trainer.params
    states = [t for s in trainer.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    schedule = trainer.pipeline.schedule
    stages = getattr(schedule, "_stages", None) or [schedule._stage]  # type: ignore[attr-defined]
    return {
        "outputs_kept": sum(len(stage.output_chunks) for stage in stages),
        "params": _bytes(params),
        "grads": _bytes([p.grad for p in params if p.grad is not None]),
        "optimizer": _bytes(states),
    }
