"""bench/one_rank.py (`run.py one-rank`) on CPU: a tp2 rank under the fake process group, timed, profiled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.conftest import TINY, bench_module


def test_one_rank_times_and_profiles_a_tp2_rank(tmp_path: Path) -> None:
    one_rank = bench_module("one_rank")
    overrides = [*TINY, "parallel=tensor", "train.microbatch_size=2"]
    try:
        result = one_rank.measure(overrides, steps=2, warmup=1, profile_dir=tmp_path)
    finally:
        dist.destroy_process_group()
    tokens = 2 * 16  # one microbatch of 2 sequences of 16 tokens, shared by the 2 tp ranks
    assert result["device"] == "cpu" and result["peak_gib"] is None
    assert result["step_ms"] >= result["host_ms"] > 0
    assert result["tok_s_per_gpu"] == pytest.approx(tokens / (result["step_ms"] / 1e3) / 2, rel=0.01)
    assert "PythonSubclass" in (tmp_path / "one_rank_ops.txt").read_text()  # DTensor's dispatch ran
    assert (tmp_path / "one_rank_trace.json.gz").stat().st_size > 0
    json.dumps(result)  # one JSON line
