"""A real CPU pipeline run (2 stages, gloo) recorded by the timeline, then `mpcli report` on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_report import Page
from tests.conftest import TINY
from tests.e2e.test_train_cli import mpcli

pytestmark = pytest.mark.e2e


def intervals(run_dir: Path, rank: int, kind: str) -> list[dict[str, float]]:
    """This rank's intervals of one kind in the last recorded step, in microbatch order."""
    data = json.loads((run_dir / "timeline" / f"rank_{rank}.json").read_text())
    assert (data["rank"], data["stages"], data["device"]) == (rank, [rank], "cpu")
    assert [s["step"] for s in data["steps"]] == [2, 3, 4]  # after one warm-up step
    found = [i for i in data["steps"][-1]["intervals"] if i["kind"] == kind]
    assert [i["microbatch"] for i in found] == list(range(4))
    return found


def test_report_of_a_real_pipeline_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, "parallel.pp=2", "parallel.microbatches=4", "train.steps=5", "train.eval_every=5"]
    done = mpcli("train", *args, "--quiet", "--run-dir", str(run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    # The ranks' clocks line up: stage 1 can only run a microbatch forward after stage 0 has, and
    # stage 0 its backward only after stage 1 (allowing for the barrier's skew).
    skew = 0.002
    fwd0, fwd1 = intervals(run_dir, 0, "forward"), intervals(run_dir, 1, "forward")
    bwd0, bwd1 = intervals(run_dir, 0, "backward"), intervals(run_dir, 1, "backward")
    for m in range(4):
        assert fwd1[m]["start"] >= fwd0[m]["end"] - skew
        assert bwd0[m]["start"] >= bwd1[m]["end"] - skew
        assert bwd0[m]["start"] >= fwd0[m]["end"]

    report = mpcli("report", str(run_dir), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert f"report: {run_dir / 'report.html'} (loss, throughput, timeline)" in report.stdout
    page = Page((run_dir / "report.html").read_text())
    assert page.figures == ["plot-loss", "plot-throughput", "plot-timeline"]  # no memory on CPU
    for plot in ("loss", "throughput", "timeline"):
        assert page.images[f"img-{plot}"]["src"].startswith("data:image/png;base64,")
    assert "eval loss" in page.images["img-loss"]["alt"]
    assert page.texts["config"] == (run_dir / "config.yaml").read_text()
    assert "pp=2 tp=1 dp=1 1f1b" in page.texts["summary"]
    assert "idle in step 4 (GPipe/1F1B textbook: 20%)" in page.texts["summary"]
