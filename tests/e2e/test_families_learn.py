"""The CNN and MLP recipes learn on their embedded data sets: eval accuracy well above chance (10%)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mpcli.train.metrics import read_metrics

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        # The recipe's pipeline (pp=2, flops-balanced), shortened for CI.
        ("cnn-pipeline", ["train.steps=60", "train.eval_every=60", "data.size=4000"]),
        # The recipe's tensor parallel (tp=2) over the deep MLP.
        ("mlp-tensor", ["train.steps=80", "train.eval_every=80", "data.size=8000"]),
    ],
)
def test_recipe_learns(tmp_path: Path, recipe: str, overrides: list[str]) -> None:
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "mpcli", "train", f"conf={recipe}", "topology.device=cpu", *overrides,
         "--quiet", "--run-dir", str(run_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = read_metrics(run_dir / "metrics.jsonl")
    accuracy = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
    assert accuracy and accuracy[-1] > 0.4, accuracy
    assert "eval accuracy" in done.stdout
