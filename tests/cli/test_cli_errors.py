"""`mpcli train` with bad input: exit code 2, one line naming the key, no traceback, nothing launched.

This typer's CliRunner keeps the streams apart: `result.stdout` and `result.stderr` are separate and
`result.output` interleaves both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mpcli.cli.app import app
from mpcli.config.compose import RECIPE_PATH_ENV, from_yaml

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_cli")


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_valid_input_reaches_launch(tmp_path: Path, launches: list[tuple[Any, ...]]) -> None:
    """The control for the bad inputs below: the patched `launch` is the one `train` calls."""
    run_dir = tmp_path / "run"
    args = ["train", "conf=gpt2-pipeline", "model=gpt2-tiny", "train.steps=3", f"--run-dir={run_dir}"]
    result = runner.invoke(app, [*args, "--quiet", "--verbose"])
    assert result.exit_code == 0, result.output
    assert len(launches) == 1
    run, launched_dir = launches[0]
    assert (run.model.n_layer, run.train.steps) == (4, 3)
    assert launched_dir == run_dir
    assert "tip:" not in result.stdout  # a CPU run: the step model's tips are for GPUs


def test_gpu_run_gets_a_faster_microbatch_split_as_a_tip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launches: list[tuple[Any, ...]]
) -> None:
    """gpt2-large tp2 in 4 microbatches of 8 is host-bound on GPUs; one microbatch of 32 is the tip."""
    for name in ("mpcli.cli.common.cuda_device_count", "mpcli.cli.train.cuda_device_count"):
        monkeypatch.setattr(name, lambda: 2)
    args = ["train", "conf=gpt2-pipeline", "model=gpt2-large", "parallel=tensor", "parallel.microbatches=4",
            "train.microbatch_size=8", f"--run-dir={tmp_path / 'run'}", "--quiet"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "tip: same layout and global batch, estimated faster: parallel.microbatches=1" in out
    assert "train.microbatch_size=32:" in out and "--gpu-mem N` checks that it fits" in out
    assert len(launches) == 1  # a tip, not a refusal


def test_a_model_the_tip_cannot_profile_still_launches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launches: list[tuple[Any, ...]]
) -> None:
    """The tip profiles the model on the meta device; a model that reads values on the host cannot run
    there. No tip then, and the run still starts."""
    for name in ("mpcli.cli.common.cuda_device_count", "mpcli.cli.train.cuda_device_count"):
        monkeypatch.setattr(name, lambda: 2)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # the fixture's package
    model = ["model.family=custom", "model._target_=tests.fixtures.byo.HostCheckedNet",
             "+model.kwargs={in_features: 16, width: 32, n_classes: 10, depth: 2}",
             "model.blocks=[inp,layers.0,layers.1,out]", "model.in_features=16",
             "data=synthetic"]  # fmt: skip
    result = runner.invoke(
        app, ["train", "conf=gpt2-pipeline", *model, f"--run-dir={tmp_path / 'run'}", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "tip:" not in result.stdout
    assert len(launches) == 1


BAD_INPUTS = [
    # (overrides, a fragment of the one error line)
    pytest.param(["train.stepz=3"], "did you mean train.steps", id="unknown-key"),
    pytest.param(["+foo=1"], "foo", id="unknown-added-key"),
    pytest.param(["train.steps=abc"], "train.steps=abc", id="wrong-type"),
    pytest.param(["train.steps=0"], "train.steps=0", id="zero-steps"),
    pytest.param(["model=gpt2-huge"], "gpt2-huge", id="unknown-group-option"),
    pytest.param(["conf=gpt2-pipelin"], "did you mean conf=gpt2-pipeline", id="missing-recipe"),
    pytest.param(["conf=missing.yaml"], "conf=missing.yaml", id="missing-recipe-file"),
    pytest.param(["parallel.pp=13"], "parallel.pp=13", id="pp>n_layer"),
    pytest.param(["parallel.split=[5,5]"], "parallel.split", id="split-drops"),
    pytest.param(["parallel.microbatches=1"], "parallel.microbatches=1", id="microbatches<pp"),
    pytest.param(["parallel.schedule=zigzag"], "parallel.schedule=zigzag", id="bad-schedule"),
    pytest.param(["model.n_head=5"], "model.d_model", id="d_model%n_head"),
    pytest.param(["data=tokens"], "data.path", id="tokens-without-path"),
    pytest.param(["data=tokens", "data.path=nope.bin"], "data.path=nope.bin", id="tokens-missing-file"),
    pytest.param(["topology.device=cuda"], "topology.device=cuda", id="cuda-without-gpu"),
    pytest.param(["topology.nproc_per_node=4"], "topology.nproc_per_node=4", id="nproc-mismatch"),
    pytest.param(["topology.nnodes=2"], "topology.rdzv_endpoint", id="nnodes-no-rdzv"),
    pytest.param(["topology.numa_binding=node"], "topology.numa_binding=node", id="numa-without-gpu"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_INPUTS)
def test_train_bad_input(
    overrides: list[str], key: str, tmp_path: Path, launches: list[tuple[Any, ...]]
) -> None:
    result = runner.invoke(app, ["train", "conf=gpt2-pipeline", *overrides])
    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert key in lines[0]
    assert result.stdout == ""  # no plan printed
    assert "Traceback" not in result.output
    assert launches == []
    assert list(tmp_path.iterdir()) == []  # no run directory either


def test_train_too_few_gpus(monkeypatch: pytest.MonkeyPatch, launches: list[tuple[Any, ...]]) -> None:
    monkeypatch.setattr("mpcli.cli.common.cuda_device_count", lambda: 1)
    result = runner.invoke(app, ["train", "conf=gpt2-pipeline"])  # pp=2, device=auto
    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert "needs 2 GPUs per node but 1 are visible" in lines[0]
    assert "the nearest layout that fits: parallel.pp=1 (or topology.device=cpu)" in lines[0]
    assert launches == []


def test_config_show() -> None:
    result = runner.invoke(app, ["config", "show", "conf=gpt2-pipeline", "model=gpt2-tiny"])
    assert result.exit_code == 0, result.output
    assert "n_layer: 4" in result.stdout
    run = from_yaml(result.stdout)
    assert (run.name, run.model.size, run.parallel.pp) == ("gpt2-pipeline", "tiny", 2)


def test_config_show_bad_input() -> None:
    result = runner.invoke(app, ["config", "show", "conf=gpt2-pipeline", "train.stepz=3"])
    assert result.exit_code == 2
    assert error_lines(result.stderr) == ["error: train.stepz: unknown config key; did you mean train.steps?"]


def test_real_process_bad_input(tmp_path: Path) -> None:
    """The installed entry point, in a narrow terminal: still one line, exit code 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "mpcli", "train", "conf=gpt2-pipeline", "train.stepz=3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != RECIPE_PATH_ENV}, "COLUMNS": "40"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "train.stepz" in lines[0]
    assert "did you mean train.steps" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
