"""`mpcli plan`: the plan of gpt2-xl on 8 GPUs, --suggest for 4 GPUs, and bad input (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mpcli.cli.app import app
from mpcli.config.compose import RECIPE_PATH_ENV

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No team recipes, no GPUs on this machine, nothing launched."""
    monkeypatch.delenv(RECIPE_PATH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mpcli.cli.common.cuda_device_count", lambda: 0)
    monkeypatch.setattr("mpcli.cli.train.launch", lambda *a, **k: pytest.fail("plan must not launch"))


def test_gpt2_xl_on_8_gpus() -> None:
    args = ["plan", "conf=gpt2-pipeline", "model=gpt2-xl", "parallel.pp=8", "--gpus", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "gpt2-xl: 1,557.7 M parameters, device cuda" in out
    assert "mesh: pp=8 × dp=1 × tp=1 on 1 node(s) × 8 processes" in out
    assert "wte + wpe + 0–5" in out and "42–47 + ln_f + head" in out
    assert "FLOPs imbalance (max / mean) 1.33" in out
    assert "memory per rank in GiB (bf16 autocast, fp32 weights; adamw; 8 microbatches of 4; 1f1b)" in out
    assert "schedule 1f1b: bubble 46.7%" in out
    rows = [line for line in out.splitlines() if line.startswith("│ 7 ")]
    assert len(rows) == 3  # mesh (rank 7), stage 7, memory of pp rank 7 (and its communication)
    assert len([line for line in out.splitlines() if line.startswith("│ 7       │ 1 ")]) == 1  # 1 held


def test_suggest_for_4_gpus_of_80_gib() -> None:
    args = ["plan", "--suggest", "--gpus", "4", "--gpu-mem", "80", "conf=gpt2-pipeline", "model=gpt2-xl"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "layouts for 4 GPU(s) of 80 GiB" in out
    ranked = [line for line in out.splitlines() if line.startswith("│ 1 ") and "tokens" not in line]
    assert ranked, out
    # gpt2-xl has 25 heads: no tensor-parallel layout passes the checks on 4 GPUs.
    table = out[out.index("layouts for 4 GPU(s)") :]
    rows = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == 10 and all(cells[2].strip() == "1" for cells in rows)
    assert all(float(cells[7]) <= 72 for cells in rows)  # 90% of 80 GiB
    assert "layouts fit" in out


def test_host_bound_layout_gets_a_note_and_a_faster_split() -> None:
    """gpt2-large tp2 in 4 microbatches of 8 is host-bound (measured so on H200s); one microbatch of 32
    issues a quarter of the collectives."""
    args = ["plan", "conf=gpt2-pipeline", "model=gpt2-large", "parallel=tensor", "parallel.microbatches=4",
            "train.microbatch_size=8", "--gpus", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # rich wraps captions
    assert "host-bound: pp rank 0 issues" in out
    assert "tip: same layout and global batch, estimated faster: parallel.microbatches=1" in out
    assert "train.microbatch_size=32:" in out and "--gpu-mem N` checks that it fits)" in out
    fitted = runner.invoke(app, [*args, "--gpu-mem", "80"])
    assert "train.microbatch_size=32:" in fitted.stdout and "checks that it fits" not in fitted.stdout
    # Planned for this machine's CPU: the step model is fitted to GPU runs, so no speed hints.
    on_cpu = runner.invoke(app, [*args[:-2], "topology.device=cpu"])
    assert on_cpu.exit_code == 0, on_cpu.output
    assert "host-bound" not in on_cpu.stdout and "estimated faster" not in on_cpu.stdout


def test_a_layout_that_does_not_fit_is_marked() -> None:
    args = ["plan", "conf=gpt2-pipeline", "model=gpt2-xl", "parallel.pp=1", "--gpus", "1", "--gpu-mem", "24"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "│ no" in result.stdout or " no │" in result.stdout


def test_cpu_without_gpus_plans_float32() -> None:
    result = runner.invoke(app, ["plan", "conf=gpt2-pipeline", "model=gpt2-tiny"])
    assert result.exit_code == 0, result.output
    assert "device cpu" in result.stdout and "(fp32; adamw;" in result.stdout
    assert "--gpus N plans for N GPUs" in result.stdout  # the way to plan for GPUs from here
    on_purpose = runner.invoke(app, ["plan", "conf=gpt2-pipeline", "model=gpt2-tiny", "topology.device=cpu"])
    assert "device cpu" in on_purpose.stdout and "--gpus N" not in on_purpose.stdout


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--gpus", "0"], "--gpus=0"),
        (["--gpu-mem", "-1"], "--gpu-mem=-1"),
        (["--suggest", "--gpu-mem", "80"], "--gpus:"),
        (["--suggest", "--gpus", "4"], "--gpu-mem:"),
        (["model=gpt2-tiny", "parallel.pp=8"], "parallel.pp=8"),
        (["parallel.pp=4", "--gpus", "2"], "parallel: pp x dp x tp = 4 needs 4 GPUs"),
        (["train.stepz=3"], "train.stepz"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], key: str) -> None:
    result = runner.invoke(app, ["plan", "conf=gpt2-pipeline", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], result.stderr
    assert "Traceback" not in result.output
