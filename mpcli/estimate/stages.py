"""A layout's stages as the estimators see them: parts, sharded parameters, activations per microbatch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mpcli.config.schema import RunConfig
from mpcli.estimate import gpt2
from mpcli.estimate.profile import ModelProfile, ParamInfo, PartProfile
from mpcli.models import family_spec
from mpcli.parallel.pipeline import (
    compiles_loss,
    loss_parallel_enabled,
    num_stages,
    split_blocks,
    stage_ranks,
)
from mpcli.parallel.speed import checkpointed
from mpcli.parallel.tensor import resolve_plan

FP32 = 4
# Tensor-parallel style -> the dimension it shards of (weight, bias); None = replicated.
SHARDED_DIMS: dict[str, tuple[int | None, int | None]] = {
    "colwise": (0, 0),
    "head": (0, 0),
    "rowwise": (1, None),  # the bias is added after the reduction: replicated
    "embedding": (0, None),
}


def shard(n: int, parts: int) -> int:
    """Elements of dimension size `n` on the largest of `parts` shards (torch.chunk / FSDP2 padding)."""
    return math.ceil(n / parts)


@dataclass(frozen=True)
class LocalParam:
    info: ParamInfo
    cast: bool  # a bf16 autocast copy is kept (any module using it is a Linear/Conv)
    tp_shape: tuple[int, ...]  # after tensor-parallel sharding (largest tp rank)

    @property
    def tp_numel(self) -> int:
        return math.prod(self.tp_shape)

    def dp_numel(self, dp: int) -> int:
        """Elements FSDP2 keeps on one dp rank: dim 0 split over dp, padded to equal shards."""
        if dp == 1 or not self.tp_shape:
            return self.tp_numel
        return shard(self.tp_shape[0], dp) * math.prod(self.tp_shape[1:])


@dataclass
class Stage:
    index: int
    pp_rank: int
    blocks: list[int]
    parts: list[PartProfile]  # first parts / blocks / last parts, in order
    params: list[LocalParam]
    first: bool
    last: bool

    @property
    def flops(self) -> float:
        """Forward + backward FLOPs per sample (before tensor-parallel division)."""
        return sum(p.flops for p in self.parts)

    @property
    def n_params(self) -> int:
        return sum(p.info.numel for p in self.params)


def tp_styles(run: RunConfig, profile: ModelProfile) -> dict[str, str]:
    """Module name -> tensor-parallel style, for the family's plan plus `parallel.tp_plan`."""
    if run.parallel.tp == 1:
        return {}
    plan = {**profile.model.tp_plan(run.parallel.sequence_parallel), **run.parallel.tp_plan}
    return resolve_plan(profile.model, plan)


def _local_params(parts: list[PartProfile], styles: dict[str, str], tp: int) -> list[LocalParam]:
    """The stage's parameters once each (a tied pair on one stage is one tensor), sharded over tp."""
    merged: dict[int, LocalParam] = {}
    for info in (p for part in parts for p in part.params):
        dims = SHARDED_DIMS.get(styles.get(info.module, ""), (None, None))
        dim = dims[0] if info.name.endswith("weight") else dims[1]
        shape = list(info.shape)
        if dim is not None and tp > 1:
            shape[dim] = shard(shape[dim], tp)
        seen = merged.get(info.ident)
        merged[info.ident] = LocalParam(
            seen.info if seen else info, info.cast or (seen is not None and seen.cast),
            seen.tp_shape if seen else tuple(shape),
        )  # fmt: skip
    return list(merged.values())


def build_stages(run: RunConfig, profile: ModelProfile) -> list[Stage]:
    """Every pipeline stage of `run` (with `parallel.split` resolved or None for an even split)."""
    p = run.parallel
    total = num_stages(p)
    styles = tp_styles(run, profile)
    stages = []
    for index, (blocks, pp_rank) in enumerate(
        zip(split_blocks(run.model.n_blocks, total, p.split), stage_ranks(p), strict=True)
    ):
        first, last = index == 0, index == total - 1
        parts = [profile.first] if first else []
        parts += [profile.blocks[b] for b in blocks] + ([profile.last] if last else [])
        stages.append(Stage(index, pp_rank, blocks, parts, _local_params(parts, styles, p.tp), first, last))
    return stages


@dataclass(frozen=True)
class Activations:
    """Bytes of one stage for one microbatch of `microbatch_size` samples on one tp rank."""

    blocks: dict[int, float]  # block -> bytes it saves for backward
    inputs: dict[int, float]  # block -> bytes of its input (all a checkpointed block keeps)
    ends: float  # saved by the first / last parts (embeddings, final norm, head, loss)
    outputs: float  # the last stage's output (kept by the schedule for the merged result)
    loss_backward: float  # temporaries of the loss backward (last stage)

    def held(self, mode: str) -> float:
        """Bytes kept until the backward, with activation checkpointing `mode` (none/full/selective)."""
        kept = (self.inputs[b] if checkpointed(b, mode) else saved for b, saved in self.blocks.items())
        return sum(kept) + self.ends

    @property
    def largest_block(self) -> float:
        """One block's saved bytes: the working set of its backward (or of its recompute)."""
        return max(self.blocks.values(), default=0.0)


def activations(
    run: RunConfig, stage: Stage, *, microbatch_size: int, bf16: bool, compiled: bool = False
) -> Activations:
    """GPT-2 from its shapes (gpt2.py; `compiled`: torch.compile fuses its loss); other families from
    the meta-device measurement (eager), whose float tensors count half under bf16 autocast (matmul
    inputs and outputs are bf16; norm inputs and the residual stream stay float32, so this slightly
    undercounts). Measured activations are not divided over tp (an upper bound for tensor-parallel
    MLPs)."""
    if family_spec(run.model.family).activation_formula == "gpt2_shapes":  # estimate/gpt2.py
        return _gpt2_activations(run, stage, microbatch_size=microbatch_size, bf16=bf16, compiled=compiled)
    b, scale = microbatch_size, 0.5 if bf16 else 1.0
    saved = lambda p: (p.saved_float * scale + p.saved_other) * b  # noqa: E731
    blocks = {i: saved(p) for i, p in zip(stage.blocks, _block_parts(stage), strict=True)}
    inputs = {i: p.in_numel * FP32 * b for i, p in zip(stage.blocks, _block_parts(stage), strict=True)}
    ends = sum(saved(p) for p in stage.parts) - sum(blocks.values())
    out = stage.parts[-1].out_numel * b if stage.last else 0
    # The output in the autocast dtype; the loss backward's two fp32 temporaries of its size.
    return Activations(blocks, inputs, ends, out * (2 if bf16 else FP32), 2 * FP32 * out)


def _block_parts(stage: Stage) -> list[PartProfile]:
    return stage.parts[int(stage.first) : len(stage.parts) - int(stage.last)]


def _gpt2_activations(
    run: RunConfig, stage: Stage, *, microbatch_size: int, bf16: bool, compiled: bool
) -> Activations:
    p = run.parallel
    x = gpt2.shapes(run.model, microbatch_size=microbatch_size, tp=p.tp, sp=p.sequence_parallel, bf16=bf16)
    fused, sharded = compiles_loss(compiled, p, run.model), loss_parallel_enabled(p, run.model)
    ends = (gpt2.first_bytes(x) if stage.first else 0.0) + (
        gpt2.last_bytes(x, loss_parallel=sharded, compiled_loss=fused) if stage.last else 0.0
    )
    block_input = FP32 * x.b * x.s_local * x.h  # the fp32 residual stream
    outputs = gpt2.logits_bytes(x, loss_parallel=sharded) if stage.last else 0.0
    loss = gpt2.loss_backward_bytes(x, loss_parallel=sharded, compiled_loss=fused) if stage.last else 0.0
    blocks = dict.fromkeys(stage.blocks, gpt2.block_bytes(x))
    return Activations(blocks, dict.fromkeys(stage.blocks, float(block_input)), ends, outputs, loss)
