"""The learning-rate schedule: linear warm-up, then cosine decay to min_lr_ratio."""

from __future__ import annotations

import pytest
import torch

from mpcli.config.schema import TrainConfig
from mpcli.train.optim import build_lr_schedule, lr_factor

TRAIN = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1, lr=1e-3)


def test_warmup_is_linear_up_to_one() -> None:
    factors = [lr_factor(step, TRAIN) for step in range(TRAIN.warmup)]
    assert factors == pytest.approx([(step + 1) / TRAIN.warmup for step in range(TRAIN.warmup)])
    assert factors[0] > 0  # the first step already trains
    assert factors[-1] == pytest.approx(1.0)


def test_decay_starts_at_one_and_ends_at_min_lr_ratio() -> None:
    assert lr_factor(TRAIN.warmup, TRAIN) == pytest.approx(1.0)
    middle = TRAIN.warmup + (TRAIN.steps - TRAIN.warmup) // 2
    assert lr_factor(middle, TRAIN) == pytest.approx((1 + TRAIN.min_lr_ratio) / 2)
    assert lr_factor(TRAIN.steps, TRAIN) == pytest.approx(TRAIN.min_lr_ratio)
    assert lr_factor(TRAIN.steps - 1, TRAIN) == pytest.approx(TRAIN.min_lr_ratio, abs=1e-3)
    assert lr_factor(10 * TRAIN.steps, TRAIN) == pytest.approx(TRAIN.min_lr_ratio)  # stays there


def test_decay_is_monotonic() -> None:
    factors = [lr_factor(step, TRAIN) for step in range(TRAIN.warmup, TRAIN.steps + 1)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    assert min(factors) >= TRAIN.min_lr_ratio - 1e-12


def test_no_warmup() -> None:
    train = TrainConfig(steps=10, warmup=0, min_lr_ratio=0.0)
    assert lr_factor(0, train) == pytest.approx(1.0)
    assert lr_factor(10, train) == pytest.approx(0.0)


def test_schedule_drives_the_optimizer() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=TRAIN.lr)
    schedule = build_lr_schedule(optimizer, TRAIN)
    for step in range(15):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(TRAIN.lr * lr_factor(step, TRAIN))
        optimizer.step()
        schedule.step()
