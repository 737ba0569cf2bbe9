"""The checkpointer over Stateful parts: it does not import the trainer, and the LR schedule comes back
from its own saved state (the step alone is the fallback for checkpoints saved without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpcli.checkpoint import store
from mpcli.checkpoint.parts import LRScheduleState
from mpcli.config.schema import RunConfig, TrainConfig
from mpcli.errors import ConfigError
from mpcli.topology import ParallelDims
from mpcli.train.loop import _samplers, checkpointing, restore, train
from mpcli.train.optim import build_lr_schedule, lr_factor
from mpcli.train.step import Trainer
from tests.conftest import tiny_run
from tests.one_process import process_group_of_one, token_file

CPU = torch.device("cpu")


def test_the_checkpointer_does_not_import_the_trainer() -> None:
    code = (
        "import mpcli.checkpoint.state, sys; print([m for m in sys.modules if m.startswith('mpcli.train')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _schedule(lr: float, groups: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)]
    return build_lr_schedule(torch.optim.SGD(params, lr=lr), TrainConfig(steps=20, warmup=5, lr=lr))


def test_the_schedule_state_round_trips_through_json_as_saved() -> None:
    ran = _schedule(lr=0.05)
    for _ in range(7):
        ran.optimizer.step()
        ran.step()
    saved = json.loads(json.dumps(LRScheduleState(ran).state_dict()))  # as meta.json holds it
    fresh = _schedule(lr=0.3, groups=2)  # another base LR and, as in another layout, two groups
    LRScheduleState(fresh).load_state_dict(saved)
    assert fresh.base_lrs == [0.05, 0.05] and fresh.last_epoch == 7
    assert fresh.get_last_lr() == ran.get_last_lr() * 2
    assert [g["lr"] for g in fresh.optimizer.param_groups] == ran.get_last_lr() * 2
    ran.step()
    fresh.step()
    assert fresh.get_last_lr() == ran.get_last_lr() * 2


def test_per_group_values_that_differ_do_not_spread_over_other_groups() -> None:
    saved = LRScheduleState(_schedule(lr=0.1, groups=2)).state_dict()
    saved["base_lrs"] = [0.1, 0.2]
    with pytest.raises(ConfigError, match="base_lrs has 2 different values.*this layout has 3 groups"):
        LRScheduleState(_schedule(lr=0.1, groups=3)).load_state_dict(saved)


def _run(tmp_path: Path, *overrides: str) -> RunConfig:
    return tiny_run(
        "parallel.pp=1", "data.name=tokens", f"data.path={token_file(tmp_path / 'tokens.bin')}",
        "train.steps=4", "train.warmup=2", "train.eval_every=0", "train.timeline_steps=0",
        "train.microbatch_size=2", "parallel.microbatches=2", *overrides,
    )  # fmt: skip


def _resumed(run: RunConfig, run_dir: Path) -> Trainer:
    trainer = Trainer(run, dims=ParallelDims(pp=1, dp=1), device=CPU)
    checkpointer, position = checkpointing(run, trainer, _samplers(run, trainer.dims)[0], run_dir=run_dir)
    assert restore(run, trainer, checkpointer) == 2 and position.step == 2
    checkpointer.close()
    return trainer


def test_a_resume_takes_the_saved_schedule_not_one_derived_from_the_step(tmp_path: Path) -> None:
    saved_dir = tmp_path / "saved"
    saved_dir.mkdir()
    with process_group_of_one():
        train(_run(tmp_path, "train.lr=0.05", "checkpoint.every=2"), dims=ParallelDims(pp=1, dp=1),
              device=CPU, run_dir=saved_dir)  # fmt: skip
        path = saved_dir / store.CHECKPOINTS / store.step_name(2)
        meta = store.read_meta(path)
        # The resumed run asks for another base LR: the saved schedule wins.
        run = _run(tmp_path, "train.lr=0.2", f"checkpoint.resume={path}", "checkpoint.every=0")
        trainer = _resumed(run, tmp_path / "resumed")
        assert trainer.lr_schedule.base_lrs == [0.05] * len(trainer.optimizer.param_groups)
        assert trainer.lr_schedule.get_last_lr() == meta.lr_schedule["_last_lr"]
        assert [g["lr"] for g in trainer.optimizer.param_groups] == meta.lr_schedule["_last_lr"]

        # A checkpoint saved without the schedule's state: derived from this run's config and the step.
        data = json.loads((path / store.META).read_text())
        del data["lr_schedule"]
        (path / store.META).write_text(json.dumps(data))
        trainer = _resumed(run, tmp_path / "derived")
        expected = 0.2 * lr_factor(2, run.train)
        assert trainer.lr_schedule.base_lrs[0] == 0.2
        assert trainer.lr_schedule.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
