"""`mpcli checkpoint list|inspect|export` on a real (DCP) checkpoint, in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mpcli.checkpoint import store
from mpcli.cli.app import app
from tests.ckpt_util import tiny_model, write_checkpoint

runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    model = tiny_model(seed=2)
    for step in (10, 20):
        write_checkpoint(model, tmp_path / "run" / store.CHECKPOINTS, step)
    return tmp_path / "run"


def test_list_shows_steps_sizes_layout_and_latest(run_dir: Path) -> None:
    result = runner.invoke(app, ["checkpoint", "list", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "step_000000" in line]
    assert len(rows) == 2 and "(latest)" in rows[1] and "(latest)" not in rows[0]
    assert "pp1×dp1×tp1 1f1b (1 ranks)" in rows[0] and "MiB" in rows[0]


def test_inspect_lists_tensors_shapes_and_dtypes(run_dir: Path) -> None:
    result = runner.invoke(app, ["checkpoint", "inspect", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "step 20" in result.stdout and "layout: pp1×dp1×tp1" in result.stdout
    assert "model.blocks.1.mlp.fc.weight" in result.stdout and "[128, 32]" in result.stdout
    assert "optim." not in result.stdout and "1 optimizer/RNG tensors not shown" in result.stdout
    everything = runner.invoke(app, ["checkpoint", "inspect", str(run_dir), "--all"])
    assert "optim.wte.weight.momentum_buffer" in everything.stdout


def test_export_writes_one_safetensors_file(run_dir: Path, tmp_path: Path) -> None:
    checkpoint = run_dir / store.CHECKPOINTS / store.step_name(10)
    out = tmp_path / "model.safetensors"
    result = runner.invoke(app, ["checkpoint", "export", str(checkpoint), "--out", str(out), "--bf16"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    tensors = load_file(str(out))
    assert tensors["wte.weight"].dtype == torch.bfloat16 and "head.weight" not in tensors


@pytest.mark.parametrize("command", ["list", "inspect", "export"])
def test_no_checkpoint_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    extra = ["--out", str(tmp_path / "x.safetensors")] if command == "export" else []
    result = runner.invoke(app, ["checkpoint", command, str(tmp_path / "none"), *extra])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error:") and "no complete checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
