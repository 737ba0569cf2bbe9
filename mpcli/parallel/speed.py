"""Activation checkpointing and per-block compilation of one pipeline stage.

Applied after tensor parallelism (they wrap the sharded blocks) and before FSDP2 (which must see the
final modules). Parameter names stay those of the plain model: `Module.compile()` compiles in place,
and torch's checkpoint wrapper strips its own prefix from state dicts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

CHECKPOINT_PREFIX = "_checkpoint_wrapped_module."


def checkpointed(block: int, mode: str) -> bool:
    """Whether `mode` recomputes block `block`: full = every block, selective = every other block."""
    return mode == "full" or (mode == "selective" and block % 2 == 0)


def apply_activation_checkpointing(blocks: nn.ModuleDict, mode: str) -> None:
    """Wrap the blocks that `mode` recomputes in backward (see `checkpointed`)."""
    for key in list(blocks):
        if checkpointed(int(key), mode):
            blocks[key] = checkpoint_wrapper(blocks[key], checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def compile_blocks(blocks: nn.ModuleDict) -> None:
    """torch.compile each block: identical blocks share one compiled graph."""
    for block in blocks.values():
        block.compile()


def compiles_whole_stage(scope: str, *, tp: int, dp: int) -> bool:
    """Whether `train.compile_scope` compiles a stage as one graph: auto does where no tensor or data
    parallel hooks sit between the blocks (measured faster: far fewer graph calls per microbatch)."""
    return scope == "stage" or (scope == "auto" and tp == 1 and dp == 1)


def compile_stage(stage: nn.Module) -> None:
    """torch.compile a stage's whole forward as one graph. Only `forward`: module hooks (the step
    timeline's clocks) stay outside the graph instead of breaking it or forcing recompiles."""
    stage.forward = torch.compile(stage.forward)  # type: ignore[method-assign]


def plain_name(name: str) -> str:
    """A parameter name without the checkpoint wrapper's prefix."""
    return name.replace(CHECKPOINT_PREFIX, "")
