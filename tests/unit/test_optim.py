"""The optimizer (fused or not) and the learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import pytest
import torch

from mpcli.config.schema import TrainConfig
from mpcli.train.optim import build_lr_schedule, build_optimizer, lr_factor

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


@pytest.mark.parametrize(
    ("setting", "device_type", "fused"), [(None, "cpu", False), (None, "cuda", True), (True, "cpu", True)]
)
def test_fused_optimizer_switch(setting: bool | None, device_type: str, fused: bool) -> None:
    """train.fused_optimizer: null = fused on CUDA only; an explicit value wins (building needs no GPU)."""
    train = TrainConfig(fused_optimizer=setting)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], train, device_type=device_type)
    assert all(group["fused"] is fused for group in optimizer.param_groups)


def test_fused_adamw_steps_like_the_loop_version() -> None:
    """The fused kernel is a speed switch only: same updates (float32, CPU), decay split kept."""
    torch.manual_seed(0)
    shapes = [(8, 4), (4,), (3, 3)]
    start = [torch.randn(shape) for shape in shapes]
    grads = [[torch.randn(shape) for shape in shapes] for _ in range(3)]
    results = {}
    for fused in (False, True):
        params = [torch.nn.Parameter(value.clone()) for value in start]
        optimizer = build_optimizer(params, TrainConfig(fused_optimizer=fused), device_type="cpu")
        for step_grads in grads:
            for param, grad in zip(params, step_grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
        results[fused] = [param.detach() for param in params]
    for plain, fused in zip(results[False], results[True], strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    assert not torch.equal(results[True][0], start[0])  # it did update
