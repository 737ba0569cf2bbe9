"""The plan's parameter, gradient and optimizer bytes (and kept outputs) equal what each rank holds
under tp x FSDP."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpcli.estimate.memory import state_bytes
from mpcli.estimate.profile import profile_model
from mpcli.estimate.stages import build_stages
from mpcli.launch import launch
from mpcli.parallel.pipeline import OUTPUTS_ALWAYS_KEPT
from tests.conftest import tiny_run
from tests.dist.plan_tasks import state_task

pytestmark = pytest.mark.dist


def test_sharded_state_matches_every_rank(tmp_path: Path) -> None:
    run = tiny_run("parallel.pp=1", "parallel.tp=2", "parallel.dp=2", "train.optimizer=adamw",
                   "parallel.microbatches=2", "train.microbatch_size=1", "data.size=200")  # fmt: skip
    (stage,) = build_stages(run, profile_model(run))
    params, grads, optimizer, _ = state_bytes(stage, dp=2, optimizer="adamw", bf16=False)
    results = launch(run, tmp_path, task=state_task)
    assert sorted(results) == [0, 1, 2, 3]
    for rank, real in results.items():
        # The planner counts the last stage's kept outputs only where torch cannot skip them.
        kept = run.parallel.microbatches if OUTPUTS_ALWAYS_KEPT else 0
        expected = {"outputs_kept": kept, "params": params, "grads": grads, "optimizer": optimizer}
        assert real == expected, rank
