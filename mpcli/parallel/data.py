"""Data parallelism over the "dp" mesh axis with FSDP2 (also sound together with tensor parallel)."""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard


def apply_dp(model: nn.Module, dp_mesh: DeviceMesh) -> None:
    """Shard each block, then the root (embedding, head, final norm), over `dp_mesh`."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleDict):
        for block in blocks.values():
            fully_shard(block, mesh=dp_mesh)
    fully_shard(model, mesh=dp_mesh)
