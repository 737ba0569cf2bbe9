"""The launcher's view of a run: live bar on a terminal, plain lines otherwise, and the summary."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from mpcli.progress import RunProgress, describe, summary_table
from mpcli.train.metrics import MetricsTail

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


def test_the_tail_returns_each_complete_record_once_as_the_file_grows(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    tail = MetricsTail(metrics)
    assert tail.poll() == []  # no file yet
    lines = [json.dumps(r).encode() + b"\n" for r in RECORDS]
    with metrics.open("ab") as f:

        def append(data: bytes) -> None:
            f.write(data)
            f.flush()

        append(lines[0] + lines[1][:10])
        assert tail.poll() == [RECORDS[0]]
        assert tail.poll() == []  # the half-written line waits for its newline
        append(lines[1][10:-1])
        assert tail.poll() == []
        append(b"\n")
        assert tail.poll() == [RECORDS[1]]
        append(lines[2])
        assert tail.poll() == [RECORDS[2]]
        assert tail.poll() == []
    assert tail.offset == metrics.stat().st_size  # it read every byte once


def test_the_tail_joins_a_character_split_between_polls(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    tail = MetricsTail(metrics)
    line = json.dumps({"step": 1, "note": "µs"}, ensure_ascii=False).encode() + b"\n"
    cut = line.index("µ".encode()) + 1  # inside the two bytes of µ
    metrics.write_bytes(line[:cut])
    assert tail.poll() == []
    with metrics.open("ab") as f:
        f.write(line[cut:])
    assert tail.poll() == [{"step": 1, "note": "µs"}]


def test_the_live_view_shows_each_new_record_once(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    out = io.StringIO()
    view = RunProgress(metrics, total_steps=2, console=Console(file=out, width=120), plain=True)
    text = "".join(json.dumps(r) + "\n" for r in RECORDS)
    half = text.index("eval_loss")  # the eval record half written
    metrics.write_text(text[:half])
    view._update(final=False)
    assert out.getvalue().count("step 1/2") == 1 and "eval loss" not in out.getvalue()
    with metrics.open("a") as f:
        f.write(text[half:])
    view._update(final=False)
    view._update(final=True)
    assert out.getvalue().count("step 2: eval loss 4.0000, accuracy 62.5%") == 1
    assert out.getvalue().count("step 1/2") == 1
