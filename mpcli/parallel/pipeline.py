"""Split a model's ordered blocks into pipeline stages and drive them with a torch schedule.

pp=1 goes through the same machinery (one stage, GPipe over the microbatches), so every layout shares
one training step: microbatch splitting, loss scaling and gradient accumulation are torch's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import PipelineScheduleSingle, Schedule1F1B, ScheduleGPipe

from mpcli.config.schema import ModelConfig, ParallelConfig
from mpcli.models import build_model, materialize
from mpcli.parallel.data import apply_dp
from mpcli.topology import Axis, ParallelDims

SCHEDULE_CLASSES: dict[str, type[PipelineScheduleSingle]] = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def split_blocks(n_blocks: int, pp: int, split: list[int] | None = None) -> list[list[int]]:
    """Block indices per stage: `split` gives counts per stage, else an even split (extras first)."""
    counts = split if split is not None else [n_blocks // pp + (i < n_blocks % pp) for i in range(pp)]
    if len(counts) != pp or sum(counts) != n_blocks or min(counts) < 1:
        raise ValueError(f"split {counts} does not cover {n_blocks} blocks with {pp} non-empty stages")
    starts = [sum(counts[:i]) for i in range(pp)]
    return [list(range(s, s + c)) for s, c in zip(starts, counts, strict=True)]


@dataclass
class Pipeline:
    """This rank's part of the pipeline."""

    model: nn.Module  # the stage module (full parameter names, parts of other stages removed)
    schedule: PipelineScheduleSingle
    stage_index: int
    has_first_stage: bool
    has_last_stage: bool
    stage_blocks: list[list[int]]  # block indices of every stage, for the plan display

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, *, train: bool = True) -> list[torch.Tensor]:
        """One pipelined forward (and backward when `train`); returns per-microbatch losses (last stage)."""
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.has_first_stage else ()
        kwargs = {"target": targets, "losses": losses} if self.has_last_stage else {}
        if train:
            self.schedule.step(*args, **kwargs)
        else:
            self.schedule.eval(*args, **kwargs)
        return losses


def build_pipeline(
    model_cfg: ModelConfig,
    parallel: ParallelConfig,
    *,
    dims: ParallelDims,
    device: torch.device,
    seed: int,
    loss_fn: LossFn,
) -> Pipeline:
    stage_blocks = split_blocks(model_cfg.n_layer, parallel.pp, parallel.split)
    stage_index = dims.coordinate(Axis.PP)
    first, last = stage_index == 0, stage_index == parallel.pp - 1

    model = build_model(model_cfg)
    model.keep_stage(stage_blocks[stage_index], first=first, last=last)
    materialize(model, device, seed)
    # Order matters: data parallel wraps the finished stage, and the pipeline stage wraps that.
    if dims.dp_enabled:
        apply_dp(model, dims.mesh[Axis.DP])

    stage = PipelineStage(model, stage_index, parallel.pp, device, group=dims.mesh[Axis.PP].get_group())
    schedule = SCHEDULE_CLASSES[parallel.schedule](stage, parallel.microbatches, loss_fn=loss_fn)
    return Pipeline(model, schedule, stage_index, first, last, stage_blocks)
