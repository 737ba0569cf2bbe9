"""Sequence parallelism's communication savings keep the numbers: bf16 gathers and bucketed sums."""

from __future__ import annotations

import pytest
import torch

from mpcli.launch import launch
from tests.conftest import tiny_run
from tests.dist.tasks import sp_grads_task

pytestmark = pytest.mark.dist


def test_sp_gathers_in_bf16_and_sums_partial_grads_in_buckets(tmp_path) -> None:
    run = tiny_run("parallel=tensor", "train.precision=bf16", "parallel.microbatches=2")
    launch(run, tmp_path, task=sp_grads_task)
    for rank in range(2):
        result = torch.load(tmp_path / f"sp_grads.rank{rank}.pt", weights_only=True)
        # Under bf16 autocast the norm's float32 output is cast before the sequence all-gather.
        assert result["input_dtypes"] and set(result["input_dtypes"]) == {"torch.bfloat16"}
        # Norm weights and biases, row-wise biases: Partial after backward, summed in one bucket.
        assert any(".ln_1." in name for name in result["partial"])
        assert all(p == "(Replicate(),)" for p in result["placements"])
        assert result["max_error"] == 0.0
