"""`mpcli report` on run directories written here (as a GPU run would leave them), and its bad input.

The page is checked by parsing it (html.parser; the machine may have no browser): every plot is an
<img> with its id and alt text holding a real PNG, and the resolved config is on the page.
"""

from __future__ import annotations

import base64
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mpcli.cli.app import app
from mpcli.config.compose import to_yaml
from mpcli.report.data import load_run
from mpcli.report.timing import pipeline_step, textbook_bubble
from tests.conftest import tiny_run

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MS = 0.001

# GPipe, pp=2, 2 microbatches, every forward and backward 1 ms: each rank is idle 2 of the 6 ms,
# the textbook bubble (pp - 1) / (microbatches + pp - 1) = 1/3.
GPIPE = {
    0: [("forward", 0, 0, 1), ("forward", 1, 1, 2), ("backward", 0, 4, 5), ("backward", 1, 5, 6)],
    1: [("forward", 0, 1, 2), ("forward", 1, 2, 3), ("backward", 0, 3, 4), ("backward", 1, 4, 5)],
}


class Page(HTMLParser):
    """The parts of the report page the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.images: dict[str, dict[str, str]] = {}
        self.figures: list[str] = []
        self.texts: dict[str, str] = {}
        self._open: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images[a["id"]] = a
        elif tag == "figure":
            self.figures.append(a["id"])
        elif tag in ("pre", "table") and "id" in a:
            self._open = a["id"]
            self.texts[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "table"):
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.texts[self._open] += data


def write_run(run_dir: Path, *, gpu: bool, timeline: bool = True) -> str:
    """A finished run's files: config.yaml, metrics.jsonl and (optionally) two ranks' timelines."""
    run_dir.mkdir(parents=True)
    config = to_yaml(tiny_run("parallel.pp=2", "parallel.microbatches=2", "parallel.schedule=gpipe"))
    (run_dir / "config.yaml").write_text(config)
    records = []
    for step in range(1, 11):
        record = {"step": step, "loss": 5.5 - 0.2 * step, "tokens_per_s": 1000.0 + step}
        if gpu:
            record |= {"mfu": 0.3, "max_mem_gb": 1.5}
        records.append(record)
        if step % 5 == 0:
            records.append({"step": step, "eval_loss": 5.0 - 0.1 * step})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if timeline:
        (run_dir / "timeline").mkdir()
        for rank, intervals in GPIPE.items():
            steps = [
                {"step": step, "duration_s": 7 * MS, "intervals": [
                    {"kind": k, "stage": rank, "microbatch": m, "start": s * MS, "end": e * MS}
                    for k, m, s, e in intervals
                ]}
                for step in (2, 3)
            ]  # fmt: skip
            data = {"rank": rank, "stages": [rank], "device": "cuda" if gpu else "cpu", "steps": steps}
            data["max_mem_gb"] = 1.0 + rank if gpu else None
            (run_dir / "timeline" / f"rank_{rank}.json").write_text(json.dumps(data))
    return config


def test_pipeline_step_measures_the_bubble(tmp_path: Path) -> None:
    write_run(tmp_path / "run", gpu=False)
    data = load_run(tmp_path / "run")
    step = pipeline_step(data.timelines)
    assert step is not None
    assert (step.step, step.start, step.end) == (3, 0.0, pytest.approx(6 * MS))
    assert [r.idle for r in step.rows] == pytest.approx([1 / 3, 1 / 3])
    assert textbook_bubble(data.run) == pytest.approx(1 / 3)


def test_report_has_every_plot_and_the_config(tmp_path: Path) -> None:
    config = write_run(tmp_path / "run", gpu=True)
    out = tmp_path / "pages" / "run.html"
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(out), "--png"])
    assert result.exit_code == 0, result.output
    page = Page(out.read_text())
    plots = ["loss", "throughput", "memory", "timeline"]
    assert page.figures == [f"plot-{p}" for p in plots]
    for plot in plots:
        img = page.images[f"img-{plot}"]
        assert img["alt"]
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(PNG_MAGIC)
        assert (tmp_path / "pages" / "run" / f"{plot}.png").read_bytes().startswith(PNG_MAGIC)
    assert "MFU" in page.images["img-throughput"]["alt"]
    assert page.texts["config"] == config
    summary = page.texts["summary"]
    assert "MFU (mean)30.0%" in summary and "33% idle in step 3 (GPipe/1F1B textbook: 33%)" in summary
    assert "src=" not in out.read_text().replace('src="data:', "")  # nothing loaded from elsewhere


def test_report_of_a_cpu_run_without_timeline_says_what_is_missing(tmp_path: Path) -> None:
    write_run(tmp_path / "run", gpu=False, timeline=False)
    result = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "run" / "report.html").read_text())
    assert page.figures == ["plot-loss", "plot-throughput"]
    assert "MFU" not in page.images["img-throughput"]["alt"]
    assert "note: No pipeline timeline: none recorded (train.timeline_steps=0" in result.stdout


def test_report_without_matplotlib_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(tmp_path / "run", gpu=False)
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now fails
    monkeypatch.delitem(sys.modules, "mpcli.report.plots", raising=False)
    result = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line] == [
        "error: mpcli report draws with matplotlib; install it: "
        "pip install 'mpcli[report]' (or pip install matplotlib)"
    ]
    assert not (tmp_path / "run" / "report.html").exists()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: None, "no such run directory"),
        (lambda d: d.mkdir(), "no training steps in metrics.jsonl"),
        (
            lambda d: (write_run(d, gpu=False), (d / "timeline" / "rank_1.json").write_text("{")),
            "rank_1.json",
        ),
    ],
    ids=["missing", "empty", "bad-timeline"],
)
def test_report_bad_input(tmp_path: Path, make: object, problem: str) -> None:
    run_dir = tmp_path / "run"
    make(run_dir)  # type: ignore[operator]
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], result.stderr
    assert "Traceback" not in result.output
