"""Data parallelism over the "dp" mesh axis with FSDP2 (also sound together with tensor parallel)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def apply_dp(model: nn.Module, dp_mesh: DeviceMesh, *, bf16: bool, microbatches: int) -> None:
    """Shard each block, then the root (embedding, head, final norm), over `dp_mesh`.

    With several microbatches per step, parameters stay gathered between forward and backward
    (reshard_after_forward=False): otherwise every microbatch would all-gather every block twice.
    With bf16, FSDP2 computes in bf16 and reduces gradients in float32.
    """
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    options = {"mesh": dp_mesh, "mp_policy": policy, "reshard_after_forward": microbatches == 1}
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleDict):
        for block in blocks.values():
            fully_shard(block, **options)
    fully_shard(model, **options)
