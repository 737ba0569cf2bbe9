"""A deep residual MLP classifier on an embedded synthetic task (data/synthetic.py).

Each block is one Megatron pair: a column-parallel expansion and a row-parallel projection, so a
tensor-parallel block costs a single all-reduce.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig
from mpcli.models.base import FamilySpec, StagedModel, TaskSpec, check_sizes, classification_loss


class MLPBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, width)
        return x + self.proj(F.gelu(self.fc(self.norm(x))))


TP_PLAN = {"blocks.*.fc": "colwise", "blocks.*.proj": "rowwise"}


class MLPNet(StagedModel):
    """Features (B, in_features) -> class logits (B, n_classes)."""

    first_parts = ("stem",)
    last_parts = ("norm", "head")
    residual_projections = ("proj.weight",)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.stem: nn.Linear | None = nn.Linear(cfg.in_features, cfg.d_model)
        self.blocks = nn.ModuleDict({str(i): MLPBlock(cfg.d_model) for i in range(cfg.n_layer)})
        self.norm: nn.LayerNorm | None = nn.LayerNorm(cfg.d_model)
        self.head: nn.Linear | None = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)  # (B, d_model)
        for block in self.blocks.values():
            x = block(x)
        if self.norm is not None and self.head is not None:
            x = self.head(self.norm(x))  # (B, n_classes)
        return x

    def weight_std(self, name: str) -> float:
        return 0.02

    def tp_plan(self, sequence_parallel: bool) -> dict[str, str]:
        return dict(TP_PLAN)


def task(cfg: ModelConfig) -> TaskSpec:
    return TaskSpec(loss_fn=classification_loss, tokens_per_sample=1, accuracy=True)


def _tp_divisible(cfg: ModelConfig, sequence_parallel: bool) -> list[tuple[str, int]]:
    return [("model.d_model", cfg.d_model)]


SPEC = FamilySpec(
    name="mlp", model=MLPNet, task=task, data=("synthetic",), check=check_sizes, tp_divisible=_tp_divisible
)
