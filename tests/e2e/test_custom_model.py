"""Bring your own model: a team's module is split and sharded from YAML alone, matching one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpcli.train.metrics import read_metrics

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RECIPE = """\
# mpcli train conf=team-net.yaml
# A team's own network (tests/fixtures/byo.py), split and sharded by mpcli from this file alone.
defaults:
  - config
  - override data: synthetic
  - _self_

name: team-net
model:
  family: custom
  _target_: tests.fixtures.byo.TeamNet
  kwargs: {in_features: 16, width: 32, n_classes: 10, depth: 4}
  blocks: [inp, layers.0, layers.1, layers.2, layers.3, out]
  in_features: 16
  n_classes: 10
parallel:
  microbatches: 4
  tp_plan:
    "blocks.*.up": colwise
    "blocks.*.down": rowwise
topology:
  device: cpu
  threads_per_worker: 1
train:
  steps: 6
  microbatch_size: 8
  optimizer: sgd
  lr: 0.2
  warmup: 0
  eval_every: 6
  eval_batches: 2
data:
  size: 4000
"""


def train(tmp_path: Path, name: str, *overrides: str) -> list[dict]:
    recipe = tmp_path / "team-net.yaml"
    recipe.write_text(RECIPE)
    run_dir = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the team's package is importable, as if installed
    done = subprocess.run(
        [sys.executable, "-m", "mpcli", "train", f"conf={recipe}", *overrides,
         "--quiet", "--run-dir", str(run_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return read_metrics(run_dir / "metrics.jsonl")


def test_custom_model_under_pp2_and_tp2_matches_one_process(tmp_path: Path) -> None:
    runs = {
        "one": train(tmp_path, "one"),
        # The same network from a factory function, which only a user's trust lets a recipe name; the
        # workers inherit that trust from the launcher.
        "pp2": train(
            tmp_path,
            "pp2",
            "parallel.pp=2",
            "parallel.balance=params",
            "model._target_=tests.fixtures.byo.build",
            "--trust-target",
            "tests.fixtures.byo.build",
        ),
        "tp2": train(tmp_path, "tp2", "parallel.tp=2"),
    }
    losses = {name: [r["loss"] for r in records if "loss" in r] for name, records in runs.items()}
    assert len(losses["one"]) == 6 and losses["one"][-1] < losses["one"][0]
    for name in ("pp2", "tp2"):
        np.testing.assert_allclose(losses[name], losses["one"], rtol=0, atol=1e-5, err_msg=name)
        eval_record = [r for r in runs[name] if "eval_accuracy" in r][-1]
        assert eval_record["eval_accuracy"] == pytest.approx(
            [r for r in runs["one"] if "eval_accuracy" in r][-1]["eval_accuracy"]
        )
