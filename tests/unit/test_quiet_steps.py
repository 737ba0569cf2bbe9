"""Steps that nobody reads hold no reporting collective and no host read; logged steps keep their
metrics.jsonl records exactly. Runs the real loop in a gloo process group of one."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from mpcli.config.schema import RunConfig, TrainConfig
from mpcli.topology import ParallelDims
from mpcli.train.loop import TrainResult, reads_step, train
from mpcli.train.step import Trainer
from tests.conftest import tiny_run
from tests.one_process import process_group_of_one, token_file

HOST_READS = ("item", "tolist", "__float__")
# What a logged step's record holds that does not depend on wall-clock time.
EXACT = ("step", "loss", "lr", "grad_norm", "tokens")


def run_of(tmp_path: Path, *overrides: str) -> RunConfig:
    return tiny_run(
        "parallel.pp=1", "data.name=tokens", f"data.path={token_file(tmp_path / 'tokens.bin')}",
        "train.steps=7", "train.eval_every=0", "train.timeline_steps=0", "checkpoint.every=0",
        "train.microbatch_size=2", "parallel.microbatches=2", *overrides,
        # SGD: AdamW on CPU reads its step counters (CPU tensors) with .item(), which would hide ours.
        "train.optimizer=sgd",
    )  # fmt: skip


class Census:
    """Calls of dist.all_reduce and of the tensor methods that read a value on the host, per training
    step: a step's count runs from the start of its update to the start of the next step's (so it
    holds the reading of the step before it, done once this one is queued)."""

    def __init__(self) -> None:
        self.step = -1  # before the first update: building the trainer and its meshes
        self.calls: defaultdict[int, Counter[str]] = defaultdict(Counter)

    def counting(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[self.step][name] += 1
            return original(*args, **kwargs)

        return wrapper

    def total(self) -> Counter[str]:
        return sum(self.calls.values(), Counter())


@pytest.fixture
def census(monkeypatch: pytest.MonkeyPatch) -> Iterator[Census]:
    counted = Census()
    monkeypatch.setattr(dist, "all_reduce", counted.counting("all_reduce", dist.all_reduce))
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted.counting(name, getattr(torch.Tensor, name)))
    update = Trainer._update

    def next_step(self: Trainer, *args: Any) -> Any:
        counted.step += 1
        return update(self, *args)

    monkeypatch.setattr(Trainer, "_update", next_step)
    with process_group_of_one():
        yield counted


def test_only_logged_steps_and_the_last_are_read() -> None:
    def read(log_every: int) -> list[int]:
        train = TrainConfig(steps=7, log_every=log_every)
        return [done for done in range(1, 8) if reads_step(done, train)]

    assert read(3) == [3, 6, 7]
    assert read(1) == [1, 2, 3, 4, 5, 6, 7]
    assert read(0) == [7]  # nothing logged: the run's last loss is still its result


def test_a_quiet_step_holds_no_reduction_and_no_host_read(tmp_path: Path, census: Census) -> None:
    run = run_of(tmp_path)
    trainer = Trainer(run, dims=ParallelDims(pp=1, dp=1), device=torch.device("cpu"))
    batch = torch.randint(0, run.model.vocab, (4, run.model.seq_len + 1))  # (B, T + 1)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    trainer.launch_step(inputs, targets).read()  # the pipeline's one-time set-up (shape exchange)
    trainer.launch_quiet_step(inputs, targets)
    assert census.calls[1] == Counter()
    stats = trainer.launch_step(inputs, targets)
    assert census.calls[2] == Counter(all_reduce=1)  # the loss over the ranks; nothing read yet
    stats.read()
    assert census.calls[2] == Counter(all_reduce=1, tolist=1)  # one device-to-host copy


def _train(run: RunConfig, run_dir: Path) -> TrainResult:
    run_dir.mkdir()
    return train(run, dims=ParallelDims(pp=1, dp=1), device=torch.device("cpu"), run_dir=run_dir)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_loop_reads_logged_steps_only_and_logs_them_as_before(tmp_path: Path, census: Census) -> None:
    every_step = _train(run_of(tmp_path), tmp_path / "every")
    assert census.total()["all_reduce"] == 7
    census.calls.clear()
    census.step = -1
    quiet = _train(run_of(tmp_path, "train.log_every=3"), tmp_path / "quiet")
    read = [3, 6, 7]  # logged every 3 steps and at the last
    for step in range(1, 7):  # 0-based; the first runs the pipeline's one-time set-up
        done = step + 1
        expected = Counter(all_reduce=int(done in read), tolist=int(step in read) + int(done == 7))
        assert +census.calls[step] == +expected, f"step {done}"
    assert quiet.loss_steps == read
    assert quiet.losses == [every_step.losses[s - 1] for s in read]
    logged = _records(tmp_path / "quiet")
    reference = {r["step"]: r for r in _records(tmp_path / "every")}
    assert [r["step"] for r in logged] == read
    for record in logged:
        assert record.keys() == reference[record["step"]].keys()
        assert {k: record[k] for k in EXACT} == {k: reference[record["step"]][k] for k in EXACT}
