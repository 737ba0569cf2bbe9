"""`mpcli train conf=NAME [overrides]`: compose, check, show the plan, launch, follow, summarise."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mpcli.cli.common import Overrides, RecipeDirs, cuda_device_count, err_console, load_run
from mpcli.config.schema import RunConfig
from mpcli.launch import WorkerFailure, launch
from mpcli.plan import plan_table, speed_tip, with_split
from mpcli.progress import RunProgress, summary_table
from mpcli.train.metrics import read_metrics


def new_run_dir(run: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(run.run_root) / run.name / stamp


def _quiet_elastic(run_dir: Path, verbose: bool) -> None:
    """torch elastic's agent logs go to run_dir/logs/launcher.log, not the terminal."""
    if verbose:
        return
    run_dir.joinpath("logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "logs" / "launcher.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


def train(
    args: Overrides = None,
    recipe_dir: RecipeDirs = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: run_root/name/<timestamp>).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Plain progress lines, no live display.")
    ] = False,
    verbose: Annotated[bool, typer.Option(help="Show torch elastic's own logs.")] = False,
) -> None:
    """Train: `mpcli train conf=gpt2-pipeline parallel.pp=4 train.steps=2000`."""
    cuda_devices = cuda_device_count()
    run = with_split(load_run(args, recipe_dir), cuda_devices)
    run_dir = run_dir or new_run_dir(run)
    console = Console()
    plain = quiet or not console.is_terminal
    console.print(plan_table(run))
    tip = speed_tip(run, cuda_devices)
    if tip is not None:
        console.print(tip, highlight=False)
    console.print(f"run directory: {run_dir}", highlight=False)
    _quiet_elastic(run_dir, verbose)
    start = time.monotonic()
    try:
        with RunProgress(run_dir / "metrics.jsonl", run.train.steps, console, plain=plain):
            launch(run, run_dir)
    except WorkerFailure as failure:
        err_console.print(f"[red]error:[/] {failure}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted; logs in {run_dir / 'logs'}")
        raise typer.Exit(130) from None
    console.print(summary_table(read_metrics(run_dir / "metrics.jsonl"), run_dir, time.monotonic() - start))
    sys.stdout.flush()
