"""The per-rank step timeline, in one process: hooks on a stage module, no process group."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from mpcli.train.timeline import WARMUP_STEPS, StepTimeline, timeline_file


def first_stage() -> nn.Module:
    """Like a pipeline's first stage: token ids in (they need no gradient), activations out."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(2000, 64), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64))


def run_steps(stage: nn.Module, timeline: StepTimeline, steps: int, microbatches: int) -> list[float]:
    """Forward + backward of each microbatch; returns when (since begin) the embedding got its grad."""
    grad_times: list[float] = []
    begun = [0.0]
    stage[0].weight.register_post_accumulate_grad_hook(
        lambda p: grad_times.append(time.perf_counter() - begun[0])
    )
    for step in range(steps):
        timeline.begin(step)
        begun[0] = time.perf_counter()
        grad_times.clear()
        for _ in range(microbatches):
            stage(torch.randint(0, 2000, (8, 256))).square().mean().backward()
        timeline.end(step)
    return grad_times


def test_records_forward_and_backward_of_each_microbatch(tmp_path: Path) -> None:
    stage = first_stage()
    timeline = StepTimeline({0: stage}, 2, device=torch.device("cpu"), run_dir=tmp_path)
    last_grads = run_steps(stage, timeline, steps=WARMUP_STEPS + 2, microbatches=3)

    data = json.loads(timeline_file(tmp_path, 0).read_text())
    assert (data["rank"], data["stages"], data["device"], data["max_mem_gb"]) == (0, [0], "cpu", None)
    assert [s["step"] for s in data["steps"]] == [WARMUP_STEPS + 1, WARMUP_STEPS + 2]
    last = data["steps"][-1]
    kinds = [(i["kind"], i["microbatch"]) for i in last["intervals"]]
    assert kinds == [
        ("forward", 0),
        ("backward", 0),
        ("forward", 1),
        ("backward", 1),
        ("forward", 2),
        ("backward", 2),
    ]
    ends = [0.0]
    for interval in last["intervals"]:
        assert ends[-1] <= interval["start"] < interval["end"] <= last["duration_s"]
        ends.append(interval["end"])
    # A backward ends when autograd is done with the stage, after the embedding (fed by token ids,
    # which need no gradient) has its gradient; torch's full backward hook would fire at the start.
    backwards = [i for i in last["intervals"] if i["kind"] == "backward"]
    assert [b["end"] >= t for b, t in zip(backwards, last_grads, strict=True)] == [True] * 3


@pytest.mark.parametrize("first", [0, 40], ids=["fresh", "resumed"])
def test_hooks_only_while_recording(tmp_path: Path, first: int) -> None:
    """Recording starts after the first step this process runs, wherever a resumed run starts."""
    stage = first_stage()
    timeline = StepTimeline({0: stage}, 1, device=torch.device("cpu"), run_dir=tmp_path)
    timeline.begin(first)  # the warm-up step: nothing attached
    assert not stage._forward_hooks and not stage._forward_pre_hooks
    timeline.end(first)
    timeline.begin(first + WARMUP_STEPS)
    assert stage._forward_hooks and stage._forward_pre_hooks
    stage(torch.randint(0, 2000, (2, 8))).sum().backward()
    timeline.end(first + WARMUP_STEPS)
    assert not stage._forward_hooks and not stage._forward_pre_hooks
    steps = json.loads(timeline_file(tmp_path, 0).read_text())["steps"]
    assert [s["step"] for s in steps] == [first + WARMUP_STEPS + 1]
    assert [i["kind"] for i in steps[0]["intervals"]] == ["forward", "backward"]


def test_off_writes_nothing(tmp_path: Path) -> None:
    stage = first_stage()
    timeline = StepTimeline({0: stage}, 0, device=torch.device("cpu"), run_dir=tmp_path)
    run_steps(stage, timeline, steps=3, microbatches=1)
    assert not stage._forward_hooks
    assert not (tmp_path / "timeline").exists()
