"""Tensor parallelism with DTensor: a plan (module-name pattern -> style name) applied to a stage.

Plans are data: each model family ships one (models/*.py), and `parallel.tp_plan` adds or overrides
entries from YAML. Style names map to torch's ParallelStyle objects here, in one table.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard
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
) -> None:
    """Shard `model` in place over the 1-D `tp_mesh` following `plan`."""
    resolved = resolve_plan(model, plan)
    styles = {
        name: make_style(style, sequence_parallel=sequence_parallel, loss_parallel=loss_parallel)
        for name, style in resolved.items()
    }
    parallelize_module(model, tp_mesh, styles)
