"""The launcher's live view of a run, drawn from the metrics.jsonl that global rank 0 writes.

Workers never draw anything: this module follows the file from the launcher process, shows one rich
progress bar (loss, tokens/s, MFU, ETA) on a terminal, or plain lines for --quiet and non-TTY output.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mpcli.train.metrics import MetricsTail

PLAIN_INTERVAL_S = 5.0


def describe(record: dict[str, Any]) -> str:
    """One short line of a training record: loss, throughput, MFU and memory where known."""
    parts = [f"loss {record['loss']:.4f}", f"{record['tokens_per_s']:,.0f} tok/s"]
    if record.get("mfu") is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    if record.get("max_mem_gb") is not None:
        parts.append(f"{record['max_mem_gb']:.1f} GB")
    return "  ".join(parts)


class RunProgress:
    """Follows a metrics file in a background thread until `stop()`."""

    def __init__(self, metrics: Path, total_steps: int, console: Console, *, plain: bool) -> None:
        self.metrics, self.total_steps, self.console, self.plain = metrics, total_steps, console, plain
        self._tail = MetricsTail(metrics)
        self._last_plain = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._progress = Progress(
            TextColumn("[bold]step"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_steps, status="starting workers…")

    def __enter__(self) -> RunProgress:
        if not self.plain:
            self._progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update(final=True)
        if not self.plain:
            self._progress.stop()

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self._update(final=False)

    def _update(self, *, final: bool) -> None:
        for record in self._tail.poll():
            if "eval_loss" in record:
                accuracy = f", accuracy {record['eval_accuracy']:.1%}" if "eval_accuracy" in record else ""
                self._print(f"step {record['step']}: eval loss {record['eval_loss']:.4f}{accuracy}")
            elif "loss" in record:
                self._show_step(record, final=final or record["step"] == self.total_steps)

    def _show_step(self, record: dict[str, Any], *, final: bool) -> None:
        if not self.plain:
            self._progress.update(self._task, completed=record["step"], status=describe(record))
            return
        now = time.monotonic()
        if final or now - self._last_plain >= PLAIN_INTERVAL_S:
            self._last_plain = now
            self.console.print(
                f"step {record['step']}/{self.total_steps}  {describe(record)}", highlight=False
            )

    def _print(self, line: str) -> None:
        (self.console if self.plain else self._progress.console).print(line, highlight=False)


def summary_table(records: list[dict[str, Any]], run_dir: Path, elapsed_s: float) -> Table:
    """The table printed when a run ends."""
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    table = Table(title="run summary", show_header=False)
    table.add_row("steps", str(steps[-1]["step"] if steps else 0))
    if steps:
        table.add_row("loss (first → last)", f"{steps[0]['loss']:.4f} → {steps[-1]['loss']:.4f}")
        # The first steps include warm-up (allocation, compilation): leave them out of the average.
        timed = steps[len(steps) // 5 :] or steps
        table.add_row("tokens/s (mean)", f"{sum(r['tokens_per_s'] for r in timed) / len(timed):,.0f}")
        mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
        if mfus:
            table.add_row("MFU (mean)", f"{100 * sum(mfus) / len(mfus):.1f}%")
        if steps[-1].get("max_mem_gb") is not None:
            table.add_row("peak memory (rank 0)", f"{steps[-1]['max_mem_gb']:.2f} GB")
    if evals:
        table.add_row("eval loss", f"{evals[-1]['eval_loss']:.4f}")
        if "eval_accuracy" in evals[-1]:
            table.add_row("eval accuracy", f"{evals[-1]['eval_accuracy']:.1%}")
    table.add_row("time", f"{elapsed_s:.1f} s")
    table.add_row("run directory", str(run_dir))
    return table
