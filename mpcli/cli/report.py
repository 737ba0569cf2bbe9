"""`mpcli report RUN_DIR`: loss, throughput, memory and the pipeline timeline of a run, as one HTML page."""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mpcli.cli.common import err_console, user_errors
from mpcli.report.data import load_run
from mpcli.report.page import render, summary_rows
from mpcli.report.timing import pipeline_step, textbook_bubble

INSTALL_HINT = "pip install 'mpcli[report]' (or pip install matplotlib)"


def _plots_module() -> ModuleType:
    """mpcli.report.plots, imported here so that every other command works without matplotlib."""
    try:
        return importlib.import_module("mpcli.report.plots")
    except ImportError as exc:
        if not (exc.name or "").startswith("matplotlib"):
            raise
        message = f"mpcli report draws with matplotlib; install it: {INSTALL_HINT}"
        err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<name>/<timestamp>).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="The HTML file (default: RUN_DIR/report.html).")
    ] = None,
    png: Annotated[
        bool, typer.Option("--png", help="Also write each plot as a PNG, next to the page.")
    ] = False,
) -> None:
    """Write one self-contained HTML page about a run: curves, memory, pipeline timeline, config."""
    with user_errors():
        data = load_run(run_dir)
        textbook = textbook_bubble(data.run)  # a schedule this mpcli does not know is one line
    plots = _plots_module()
    step = pipeline_step(data.timelines)
    drawn, notes = plots.draw_all(data, step, textbook)
    page = render(data, drawn, notes, summary_rows(data, step, textbook), now=datetime.now())
    out = out or run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    console = Console(soft_wrap=True, highlight=False, markup=False)
    console.print(f"report: {out} ({', '.join(p.id for p in drawn)})")
    if png:
        folder = out.with_suffix("")
        folder.mkdir(exist_ok=True)
        for plot in drawn:
            (folder / f"{plot.id}.png").write_bytes(plot.png)
        console.print(f"plots: {folder}/{{{','.join(p.id for p in drawn)}}}.png")
    for note in notes:
        console.print(f"note: {note}")
