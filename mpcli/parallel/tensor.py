"""Tensor parallelism with DTensor: a plan (module-name pattern -> style name) applied to a stage.

Plans are data: each model family ships one (models/*.py), and `parallel.tp_plan` adds or overrides
entries from YAML. Style names map to torch's ParallelStyle objects here, in one table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)


def make_style(name: str, *, sequence_parallel: bool, loss_parallel: bool) -> ParallelStyle:
    """The torch style for a style name; sequence parallelism keeps activations sharded on dim 1."""
    between = Shard(1) if sequence_parallel else Replicate()  # layout of activations between regions
    styles: dict[str, ParallelStyle] = {
        # Linear whose output features are split; input replicated.
        "colwise": ColwiseParallel(),
        # Linear whose input features are split; partial sums reduced (or reduce-scattered under SP).
        "rowwise": RowwiseParallel(output_layouts=between),
        # Embedding table split over its rows (the vocabulary); lookups of other shards are summed in.
        "embedding": RowwiseParallel(input_layouts=Replicate(), output_layouts=between),
        # Output head split over the vocabulary; logits stay sharded for loss_parallel.
        "head": ColwiseParallel(
            input_layouts=between,
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel,
        ),
        # Norms computed on each rank's slice of the sequence.
        "sequence_parallel": SequenceParallel(),
        # Gather the sequence-sharded input of an attention/MLP block before its column-wise layers.
        "gather_sequence": PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)
        ),
    }
    return styles[name]


def resolve_plan(model: nn.Module, plan: dict[str, str]) -> dict[str, str]:
    """Expand patterns over the modules this stage really has (a stage lacks other stages' blocks)."""
    names = [name for name, _ in model.named_modules() if name]
    resolved: dict[str, str] = {}
    for pattern, style in plan.items():
        for name in names:
            if fnmatchcase(name, pattern):
                resolved[name] = style
    return resolved


def apply_tp(
    model: nn.Module,
    tp_mesh: DeviceMesh,
    plan: dict[str, str],
    *,
    sequence_parallel: bool,
    loss_parallel: bool,
    compute_dtype: torch.dtype | None = None,
) -> None:
    """Shard `model` in place over the 1-D `tp_mesh` following `plan`; `compute_dtype` (the autocast
    dtype, if any) is the dtype sequence-parallel activations are gathered in."""
    resolved = resolve_plan(model, plan)
    styles = {
        name: make_style(style, sequence_parallel=sequence_parallel, loss_parallel=loss_parallel)
        for name, style in resolved.items()
    }
    if compute_dtype is not None and sequence_parallel:
        # Registered before the styles' own input hooks, so the cast runs first (prepend=True would
        # do the same but breaks torch.compile's guards in torch 2.8-2.11, pytorch#160083).
        for name, style in resolved.items():
            if style in GATHERING_STYLES:
                model.get_submodule(name).register_forward_pre_hook(_cast_input(compute_dtype))
    parallelize_module(model, tp_mesh, styles)


def enable_async_tp(tp_mesh: DeviceMesh) -> None:
    """Turn on torch's micro-pipelined tensor parallelism for graphs compiled from here on: Inductor
    splits each all-gather -> matmul and matmul -> reduce-scatter pair into chunks, so one chunk's
    transfer (over symmetric memory between the tp ranks) overlaps the previous chunk's matmul."""
    from torch.distributed._symmetric_memory import enable_symm_mem_for_group

    # A process-wide Inductor switch, as torch exposes it; every graph of this worker is a tp graph.
    torch._inductor.config._micro_pipeline_tp = True
    with warnings.catch_warnings():
        # Marked deprecated in recent torch, yet still what enables the group for the fusion pass (2.13).
        warnings.simplefilter("ignore", FutureWarning)
        enable_symm_mem_for_group(tp_mesh.get_group().group_name)


# Styles whose module input is all-gathered along the sequence under sequence parallelism.
GATHERING_STYLES = ("gather_sequence", "head")


def _cast_input(dtype: torch.dtype) -> Callable[[nn.Module, tuple], tuple]:
    """Cast the first input to the autocast dtype before the gather: the column-wise layers behind it
    would cast it anyway, so this halves the all-gather (and its backward reduce-scatter) for free."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        first = args[0]
        if first.is_floating_point() and first.dtype != dtype:
            return (first.to(dtype), *args[1:])
        return args

    return hook


def reduce_partial_grads(params: Iterable[nn.Parameter]) -> None:
    """Sum every pending-sum (Partial) DTensor gradient with one all-reduce per mesh and layout.

    Sequence parallelism leaves the gradients of replicated parameters that see sequence-sharded
    activations (norms, row-wise biases) as Partial. Left alone, the clipping norm and the optimizer
    each all-reduce them one tensor at a time: hundreds of tiny collectives per step.
    """
    buckets: dict[tuple, list[nn.Parameter]] = {}
    for param in params:
        grad = param.grad
        if not isinstance(grad, DTensor) or not any(p.is_partial() for p in grad.placements):
            continue
        if any(p.is_partial() and p.reduce_op != "sum" for p in grad.placements):  # type: ignore[attr-defined]
            param.grad = grad.redistribute(grad.device_mesh, _summed(grad.placements))  # rare: DTensor's way
        else:
            buckets.setdefault((grad.device_mesh, grad.placements, grad.dtype), []).append(param)
    for (mesh, placements, _), bucket in buckets.items():
        _sum_bucket(bucket, mesh, placements)


def _summed(placements: tuple[Placement, ...]) -> tuple[Placement, ...]:
    """The placements of a gradient once its pending sums are done."""
    return tuple(Replicate() if p.is_partial() else p for p in placements)


@torch.no_grad()
def _sum_bucket(bucket: list[nn.Parameter], mesh: DeviceMesh, placements: tuple[Placement, ...]) -> None:
    """All-reduce the local gradients of `bucket` (same mesh, placements, dtype) as one flat buffer."""
    grads: list[DTensor] = [p.grad for p in bucket]  # type: ignore[misc]
    flat = torch.cat([g.to_local().reshape(-1) for g in grads])
    for dim, placement in enumerate(placements):
        if placement.is_partial():
            dist.all_reduce(flat, group=mesh.get_group(dim))
    summed = _summed(placements)
    chunks = flat.split([g.to_local().numel() for g in grads])
    for param, grad, chunk in zip(bucket, grads, chunks, strict=True):
        local = chunk.view_as(grad.to_local())
        param.grad = DTensor.from_local(
            local, mesh, summed, run_check=False, shape=grad.shape, stride=grad.stride()
        )
