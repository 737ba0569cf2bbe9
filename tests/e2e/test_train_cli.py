"""`mpcli train` as a user runs it: real subprocesses, real workers, judged by their files."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpcli.train.metrics import read_metrics
from tests.conftest import TINY

pytestmark = pytest.mark.e2e

SGD = ["train.optimizer=sgd", "train.lr=0.5", "train.warmup=0", "train.eval_every=0"]


def mpcli(
    *args: str, cwd: Path, timeout: int = 240, tmpdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`mpcli ARGS`; with `tmpdir`, that empty folder is the system temp directory of the run."""
    env = dict(os.environ)
    if tmpdir is not None:
        tmpdir.mkdir()
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "mpcli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def step_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_pipeline_run_learns_and_leaves_its_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["model=gpt2-tiny", "topology.device=cpu", "train.steps=60", "train.eval_every=30"]
    tmpdir = tmp_path / "tmp"
    done = mpcli(
        "train",
        "conf=gpt2-pipeline",
        *args,
        "--quiet",
        "--run-dir",
        str(run_dir),
        cwd=tmp_path,
        tmpdir=tmpdir,
    )
    assert done.returncode == 0, done.stderr
    assert "stage" in done.stdout and "run summary" in done.stdout
    assert list(tmpdir.iterdir()) == []  # torch elastic's folders and error files stayed in the run
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 61))
    for key in ("lr", "tokens", "tokens_per_s", "step_time_s"):
        assert all(key in r for r in steps), key
    assert steps[-1]["loss"] < steps[0]["loss"] - 1.0  # bytes start near ln(256) = 5.5
    assert [r["step"] for r in records if "eval_loss" in r] == [30, 60]
    # The measured bubble of the recorded steps (train.timeline_steps), one idle share per rank.
    bubbles = [r for r in records if "bubble" in r]
    assert len(bubbles) == 3 and all(len(r["idle_per_rank"]) == 2 for r in bubbles)
    assert all(0 < r["bubble"] < 1 and r["bubble"] == sum(r["idle_per_rank"]) / 2 for r in bubbles)
    assert (run_dir / "config.yaml").read_text().count("pp: 2") == 1
    assert sorted(p.name for p in (run_dir / "logs").glob("rank_*.log")) == ["rank_0.log", "rank_1.log"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["keys", "slurm"])
def test_two_nodes_over_loopback_match_one_node(tmp_path: Path, how: str) -> None:
    """Two launchers on 127.0.0.1 form one 2-node job (one stage each) with the 1-node losses: set up
    with topology keys, or with topology=slurm from the environment srun gives each node."""
    common = [*TINY, *SGD, "train.steps=5", "parallel.pp=2"]
    one_node = tmp_path / "one"
    done = mpcli("train", *common, "--quiet", "--run-dir", str(one_node), cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    port = _free_port()
    two_nodes = tmp_path / "two"  # shared by both launchers, as on a shared file system
    nodes = []
    for rank in (0, 1):
        if how == "keys":
            env = dict(os.environ)
            topology = ["topology.nnodes=2", f"topology.node_rank={rank}",
                        f"topology.rdzv_endpoint=127.0.0.1:{port}"]  # fmt: skip
        else:
            env = {**os.environ, "SLURM_NNODES": "2", "SLURM_NODEID": str(rank), "SLURM_JOB_ID": "77",
                   "SLURM_JOB_NODELIST": "127.0.0.1", "MPCLI_RDZV_PORT": str(port)}  # fmt: skip
            topology = ["topology=slurm"]
        command = [
            sys.executable,
            "-m",
            "mpcli",
            "train",
            *common,
            *topology,
            "--quiet",
            "--run-dir",
            str(two_nodes),
        ]
        nodes.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for node in nodes:
        _, err = node.communicate(timeout=240)
        assert node.returncode == 0, err
    assert len(step_losses(two_nodes)) == 5
    np.testing.assert_allclose(step_losses(two_nodes), step_losses(one_node), rtol=0, atol=1e-5)
    if how == "slurm":
        assert "rdzv_id: slurm-77" in (two_nodes / "config.yaml").read_text()


def test_worker_crash_reports_rank_error_and_log(tmp_path: Path) -> None:
    """Token ids beyond the vocabulary stop the first batch inside the workers, not the launcher: the
    error names the rank that failed first (every rank reads the batch), the id and the key to change,
    and that rank's log holds the traceback."""
    tokens = tmp_path / "tokens.bin"
    np.full(20_000, 60_000, dtype=np.uint16).tofile(tokens)
    run_dir, tmpdir = tmp_path / "run", tmp_path / "tmp"
    done = mpcli(
        "train", *TINY, "parallel.pp=2", "data=tokens", f"data.path={tokens}", "train.steps=3",
        "--quiet", "--run-dir", str(run_dir), cwd=tmp_path, tmpdir=tmpdir,
    )  # fmt: skip
    assert done.returncode == 1
    error_lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, done.stderr
    failed = re.match(r"error: rank (\d) failed: ValueError: data: token id 60000 is >= ", error_lines[0])
    assert failed is not None, error_lines[0]
    log = run_dir / "logs" / f"rank_{failed[1]}.log"
    assert str(log) in error_lines[0] and "Traceback" in log.read_text()
    assert list(tmpdir.iterdir()) == []  # no torch.multiprocessing error pickles left behind


def test_compiled_stages_match_eager(tmp_path: Path) -> None:
    """train.compile=true compiles each pipeline stage whole (compile_scope auto, tp = dp = 1), with
    activation checkpointing inside the graph and the timeline's hooks outside it: same losses."""
    common = ["model=gpt2-tiny", "topology.device=cpu", "train.steps=4", *SGD, "checkpoint.every=0",
              "train.activation_checkpointing=selective", "train.timeline_steps=2"]  # fmt: skip
    losses = {}
    for compiled in ("false", "true"):
        run_dir = tmp_path / compiled
        args = ["train", "conf=gpt2-pipeline", *common, f"train.compile={compiled}", "--quiet"]
        done = mpcli(*args, "--run-dir", str(run_dir), cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr
        losses[compiled] = step_losses(run_dir)
    assert len(losses["true"]) == 4
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=0, atol=1e-5)
