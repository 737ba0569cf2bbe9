"""Optimizer and learning-rate schedule (linear warm-up, then cosine decay to min_lr_ratio * lr)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR

from mpcli.config.schema import TrainConfig
from mpcli.config.validate import on_for_cuda


def build_optimizer(
    params: list[nn.Parameter], train: TrainConfig, *, device_type: str
) -> torch.optim.Optimizer:
    """AdamW decays matrices only (not biases, norms); SGD (plain, for parity tests) decays nothing.

    Sharded (DTensor) and plain parameters go into separate groups: the multi-tensor kernels take
    one kind per call.
    """
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(_by_kind(params), lr=train.lr)
    groups = [
        {**group, "weight_decay": decay}
        for decay, subset in ((train.weight_decay, [p for p in params if p.dim() >= 2]),
                              (0.0, [p for p in params if p.dim() < 2]))
        for group in _by_kind(subset)
    ]  # fmt: skip
    fused = on_for_cuda(train.fused_optimizer, device_type)
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), fused=fused)


def _by_kind(params: list[nn.Parameter]) -> list[dict]:
    kinds = ([p for p in params if isinstance(p, DTensor)], [p for p in params if not isinstance(p, DTensor)])
    return [{"params": kind} for kind in kinds if kind]


def lr_factor(step: int, train: TrainConfig) -> float:
    """Multiplier of train.lr at `step` (0-based)."""
    if step < train.warmup:
        return (step + 1) / train.warmup
    span = max(1, train.steps - train.warmup)
    progress = min(1.0, (step - train.warmup) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * cosine


def build_lr_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, train))
