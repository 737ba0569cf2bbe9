"""The launcher's view of a run: live bar on a terminal, plain lines otherwise, and the summary."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from mpcli.progress import RunProgress, describe, summary_table

RECORDS = [
    {"step": 1, "loss": 5.5, "tokens_per_s": 1000.0, "mfu": 0.25, "max_mem_gb": 3.0},
    {"step": 2, "loss": 4.25, "tokens_per_s": 2000.0, "mfu": 0.5, "max_mem_gb": 3.5},
    {"step": 2, "eval_loss": 4.0, "eval_accuracy": 0.625},
]


def follow(tmp_path: Path, *, terminal: bool, plain: bool) -> str:
    metrics = tmp_path / "metrics.jsonl"
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120)
    with RunProgress(metrics, total_steps=2, console=console, plain=plain):
        metrics.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return out.getvalue()


def test_terminal_shows_a_live_bar_with_the_last_step(tmp_path: Path) -> None:
    text = follow(tmp_path, terminal=True, plain=False)
    assert "2/2" in text and "loss 4.2500" in text and "MFU 50.0%" in text and "3.5 GB" in text
    assert "step 2: eval loss 4.0000, accuracy 62.5%" in text


def test_plain_mode_prints_lines_without_a_bar(tmp_path: Path) -> None:
    text = follow(tmp_path, terminal=False, plain=True)
    assert "step 2/2  loss 4.2500  2,000 tok/s  MFU 50.0%  3.5 GB" in text
    assert "━" not in text  # no bar characters


def test_describe_omits_what_the_cpu_does_not_have() -> None:
    assert describe({"loss": 1.0, "tokens_per_s": 10.0}) == "loss 1.0000  10 tok/s"


def test_summary_reports_first_and_last_loss_and_eval(tmp_path: Path) -> None:
    out = io.StringIO()
    Console(file=out, width=300).print(summary_table(RECORDS, tmp_path, elapsed_s=3.0))
    text = out.getvalue()
    assert "5.5000 → 4.2500" in text and "4.0000" in text and "62.5%" in text and str(tmp_path) in text
