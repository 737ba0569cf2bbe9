"""The parallel topology of one run: degrees, device, and the DeviceMesh built once."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


class Axis(StrEnum):
    """Mesh axis names, outer to inner: tp ranks are neighbours so they share a node."""

    PP = "pp"
    DP = "dp"
    TP = "tp"


@dataclass
class ParallelDims:
    pp: int
    dp: int
    tp: int = 1
    device_type: str = "cpu"
    _mesh: DeviceMesh | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for axis in Axis:
            if getattr(self, axis) < 1:
                raise ValueError(f"parallel.{axis}={getattr(self, axis)}: must be >= 1")

    @property
    def world_size(self) -> int:
        return self.pp * self.dp * self.tp

    @property
    def pp_enabled(self) -> bool:
        return self.pp > 1

    @property
    def dp_enabled(self) -> bool:
        return self.dp > 1

    @property
    def backend(self) -> str:
        return "nccl" if self.device_type == "cuda" else "gloo"

    @property
    def mesh(self) -> DeviceMesh:
        """The ("pp", "dp", "tp") mesh; needs an initialised process group of world_size ranks."""
        if self._mesh is None:
            if dist.get_world_size() != self.world_size:
                raise RuntimeError(f"world size {dist.get_world_size()} != pp x dp x tp = {self.world_size}")
            self._mesh = init_device_mesh(
                self.device_type, (self.pp, self.dp, self.tp), mesh_dim_names=tuple(Axis)
            )
        return self._mesh

    def coordinate(self, axis: Axis) -> int:
        """This rank's index along `axis`."""
        return self.mesh[axis].get_local_rank()

    def device(self, local_rank: int) -> torch.device:
        if self.device_type == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device("cpu")

    def pp_end_groups(self, *, last_stage_rank: int) -> dist.ProcessGroup | None:
        """Group of pipeline rank 0 (first stage) and `last_stage_rank` (last stage) that share this
        rank's (dp, tp) coordinate, to sum the gradients of an embedding tied to the output head.

        None where both stages sit on pipeline rank 0 (pp=1, V-shaped schedules). Every rank must
        call this (group creation is collective), even ranks outside every pair.
        """
        if last_stage_rank == 0:
            return None
        ranks = self.mesh.mesh  # (pp, dp, tp) tensor of global ranks
        pairs = [
            [int(ranks[0, d, t]), int(ranks[last_stage_rank, d, t])]
            for d in range(self.dp)
            for t in range(self.tp)
        ]
        mine, _ = dist.new_subgroups_by_enumeration(pairs, backend=self.backend)
        return mine
