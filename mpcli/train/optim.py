"""Optimizer and learning-rate schedule (linear warm-up, then cosine decay to min_lr_ratio * lr)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mpcli.config.schema import TrainConfig


def build_optimizer(model: nn.Module, train: TrainConfig, *, device_type: str) -> torch.optim.Optimizer:
    """AdamW decays matrices only (not biases, norms); SGD (plain, for parity tests) decays nothing."""
    params = [p for p in model.parameters() if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": train.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=train.lr, betas=(train.beta1, train.beta2), fused=device_type == "cuda"
    )


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
