"""Split a model's ordered blocks into pipeline stages and drive them with a torch schedule.

pp=1 goes through the same machinery (one stage, GPipe over the microbatches), so every layout shares
one training step: microbatch splitting, loss scaling and gradient accumulation are torch's.
Each stage module is built in a fixed order: meta build -> keep this stage -> materialise + init ->
tensor parallel (needs the full local weights to shard) -> data parallel (FSDP2 wraps the sharded
stage) -> PipelineStage (drives the finished module).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining import schedules as torch_schedules

from mpcli.config.schema import ModelConfig, ParallelConfig, TrainConfig
from mpcli.config.validate import bf16_enabled, on_for_cuda
from mpcli.models import build_model, family_spec, materialize
from mpcli.models.base import LossFn, StagedModel
from mpcli.parallel.data import apply_dp
from mpcli.parallel.partition import even_split
from mpcli.parallel.schedules import schedule_spec
from mpcli.parallel.speed import (
    apply_activation_checkpointing,
    compile_blocks,
    compile_stage,
    compiles_whole_stage,
)
from mpcli.parallel.tensor import apply_tp, enable_async_tp
from mpcli.topology import Axis, ParallelDims

# Newer torch lets a step skip keeping the last stage's outputs for a merged result that training
# (and a loss-only evaluation) never reads (GPT-2: every microbatch's logits); older torch keeps them.
_STEP_PARAMETERS = inspect.signature(torch_schedules.PipelineScheduleSingle.step).parameters
OUTPUTS_ALWAYS_KEPT = "return_outputs" not in _STEP_PARAMETERS


def loss_parallel_enabled(parallel: ParallelConfig, model: ModelConfig) -> bool:
    """The one answer to "is the loss computed on vocabulary-sharded logits?": tp > 1, asked for, and a
    family whose head is sharded over a vocabulary. The head's style, the trainer's loss_parallel
    context, loss compilation and the planner all read it."""
    return parallel.tp > 1 and parallel.loss_parallel and family_spec(model.family).tokens


def compiles_loss(compiled: bool, parallel: ParallelConfig, model: ModelConfig) -> bool:
    """Whether the loss is compiled with the model (`compiled`: torch.compile is on). The upcast,
    log-softmax and NLL then fuse, so float32 logits are never materialised. Under loss parallel the
    logits are vocabulary-sharded DTensors: the loss stays eager."""
    return compiled and not loss_parallel_enabled(parallel, model)


def split_blocks(n_blocks: int, stages: int, split: list[int] | None = None) -> list[list[int]]:
    """Block indices per stage: `split` gives counts per stage, else an even split (extras first)."""
    counts = split if split is not None else even_split(n_blocks, stages)
    if len(counts) != stages or sum(counts) != n_blocks or min(counts) < 1:
        raise ValueError(f"split {counts} does not cover {n_blocks} blocks with {stages} non-empty stages")
    starts = [sum(counts[:i]) for i in range(stages)]
    return [list(range(s, s + c)) for s, c in zip(starts, counts, strict=True)]


def num_stages(parallel: ParallelConfig) -> int:
    return parallel.pp * parallel.virtual_stages


def stage_ranks(parallel: ParallelConfig) -> list[int]:
    """Pipeline rank holding each stage: looped placement r, r + pp, ...; V-shaped r and 2pp - 1 - r."""
    return schedule_spec(parallel.schedule).stage_ranks(parallel.pp, parallel.virtual_stages)


@dataclass
class Pipeline:
    """This rank's part of the pipeline."""

    parts: list[StagedModel]  # stage modules of this rank (full parameter names, others removed)
    stage_indices: list[int]
    schedule: torch_schedules._PipelineSchedule
    num_stages: int
    eval_needs_backward: bool = False

    @property
    def has_first_stage(self) -> bool:
        return 0 in self.stage_indices

    @property
    def has_last_stage(self) -> bool:
        return self.num_stages - 1 in self.stage_indices

    def step(
        self, inputs: torch.Tensor, targets: torch.Tensor, *, train: bool = True, outputs: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """One pipelined forward (+ backward when `train`): per-microbatch losses and, when `outputs`,
        the merged output of the last stage (on the rank holding it; None elsewhere)."""
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.has_first_stage else ()
        kwargs: dict[str, object] = {"target": targets, "losses": losses} if self.has_last_stage else {}
        if not OUTPUTS_ALWAYS_KEPT:
            kwargs["return_outputs"] = outputs
        if train or self.eval_needs_backward:
            # torch's forward-only eval() fails for V-shaped schedules ("can't steal_bwd_input"):
            # they evaluate through step(); the gradients it leaves are cleared by the next step.
            with torch.enable_grad():
                output = self.schedule.step(*args, **kwargs)
        else:
            output = self.schedule.eval(*args, **kwargs)
        return losses, output if self.has_last_stage and outputs else None


def _build_stage(
    model_cfg: ModelConfig,
    parallel: ParallelConfig,
    train: TrainConfig,
    blocks: list[int],
    *,
    first: bool,
    last: bool,
    dims: ParallelDims,
    device: torch.device,
) -> StagedModel:
    bf16 = bf16_enabled(train.precision, device.type)
    model = build_model(model_cfg)
    model.keep_stage(blocks, first=first, last=last)
    materialize(model, device, train.seed)
    if dims.tp > 1:
        plan = {**model.tp_plan(parallel.sequence_parallel), **parallel.tp_plan}
        apply_tp(
            model,
            dims.mesh[Axis.TP],
            plan,
            sequence_parallel=parallel.sequence_parallel,
            loss_parallel=loss_parallel_enabled(parallel, model_cfg),
            compute_dtype=torch.bfloat16 if bf16 else None,
        )
        model.tie_weights()  # sharding replaced the tied parameter on one side
        if parallel.async_tp:
            enable_async_tp(dims.mesh[Axis.TP])
    apply_activation_checkpointing(model.blocks, train.activation_checkpointing)
    if on_for_cuda(train.compile, device.type):
        if compiles_whole_stage(train.compile_scope, tp=dims.tp, dp=dims.dp):
            compile_stage(model)
        else:
            compile_blocks(model.blocks)
    if dims.dp_enabled:
        apply_dp(model, dims.mesh[Axis.DP], bf16=bf16, microbatches=parallel.microbatches)
    return model


def build_pipeline(
    model_cfg: ModelConfig,
    parallel: ParallelConfig,
    train: TrainConfig,
    *,
    dims: ParallelDims,
    device: torch.device,
    loss_fn: LossFn,
) -> Pipeline:
    spec = schedule_spec(parallel.schedule)
    total = num_stages(parallel)
    blocks = split_blocks(model_cfg.n_blocks, total, parallel.split)
    mine = spec.stages_of_rank(parallel.pp, parallel.virtual_stages, dims.coordinate(Axis.PP))
    pp_group = dims.mesh[Axis.PP].get_group()
    parts, stages = [], []
    for index in mine:
        part = _build_stage(
            model_cfg, parallel, train, blocks[index], first=index == 0, last=index == total - 1,
            dims=dims, device=device,
        )  # fmt: skip
        parts.append(part)
        stages.append(PipelineStage(part, index, total, device, group=pp_group))
    if compiles_loss(on_for_cuda(train.compile, device.type), parallel, model_cfg):
        loss_fn = torch.compile(loss_fn)
    driven = stages if spec.multi_stage else stages[0]  # torch's single-stage classes take one stage
    schedule = spec.torch_class(driven, parallel.microbatches, loss_fn=loss_fn)
    return Pipeline(parts, mine, schedule, total, eval_needs_backward=spec.eval_needs_backward)
