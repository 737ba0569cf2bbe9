"""What every model family provides so that mpcli can split, shard and train it.

A family's model is `first parts -> ordered blocks -> last parts`. Blocks live in a ModuleDict keyed by
the global block index, so each pipeline stage keeps the full model's parameter names; the parts a
stage does not own are set to None. The tensor-parallel plan is data: module-name pattern -> style.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the last dim: logits (..., C), integer targets (...)."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten())


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs.float(), targets.float())


class StagedModel(nn.Module):
    """Base of every family: owns the pipeline pruning and the deterministic initialisation."""

    blocks: nn.ModuleDict
    first_parts: tuple[str, ...] = ()  # attributes that live on the first stage only
    last_parts: tuple[str, ...] = ()  # attributes that live on the last stage only
    residual_projections: tuple[str, ...] = ()  # weights whose init std is scaled by depth

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def keep_stage(self, block_ids: list[int], *, first: bool, last: bool) -> None:
        """Remove everything this pipeline stage does not own (call on the meta device)."""
        for key in [k for k in self.blocks if int(k) not in block_ids]:
            del self.blocks[key]
        for name in () if first else self.first_parts:
            setattr(self, name, None)
        for name in () if last else self.last_parts:
            setattr(self, name, None)

    def tie_weights(self) -> None:
        """Families with tied parameters re-tie them here (after materialising or sharding)."""

    @property
    def head_is_separate_copy(self) -> bool:
        """True on a last stage holding a copy of a parameter tied to the first stage."""
        return False

    def tied_pair(self) -> list[nn.Parameter]:
        """This stage's side of a parameter tied across the first and last stage (none by default)."""
        return []

    def init_key(self, name: str) -> str:
        """The name whose seeded values a parameter takes (a tied copy takes its original's)."""
        return name

    def init_std(self, name: str) -> float | None:
        """Normal std for weights; None for biases and norms (zeros / ones)."""
        if name.endswith(".bias") or "norm" in name or ".ln" in f".{name}":
            return None
        if self.residual_projections and name.endswith(self.residual_projections):
            return 0.02 / math.sqrt(2 * len(self.all_block_ids()))
        return self.weight_std(name)

    def weight_std(self, name: str) -> float:
        """He-style fan-in std for linear/convolution weights; families may override."""
        param = self.get_parameter(name)
        fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else param.shape[0]
        return math.sqrt(2.0 / fan_in)

    def init_weights(self, seed: int) -> None:
        """Deterministic per parameter name, so every layout starts from the same weights."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                key = self.init_key(name)
                std = self.init_std(key)
                if std is None:
                    param.fill_(1.0 if name.endswith("weight") else 0.0)
                    continue
                gen = torch.Generator(device=param.device)
                gen.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
                param.normal_(0.0, std, generator=gen)

    def all_block_ids(self) -> list[int]:
        return list(range(self.cfg.n_layer))

    def flops_per_sample(self) -> float:
        """Training FLOPs (forward + backward) per sample of the whole model: 6 x parameters by default
        (2 per multiply-add forward, twice that backward); families with more work per parameter
        (attention, convolutions) override it."""
        return 6.0 * sum(p.numel() for p in self.parameters())

    def tp_plan(self, parallel_sequence: bool) -> dict[str, str]:
        """Module-name pattern -> style name (see parallel/tensor.py); empty = no tensor parallelism."""
        return {}


@dataclass(frozen=True)
class TaskSpec:
    """How a family is trained and measured."""

    loss_fn: LossFn
    # Positions per sample that count as "tokens" for throughput (seq_len for LMs, 1 otherwise).
    tokens_per_sample: int
    # Report eval accuracy (classification tasks).
    accuracy: bool
