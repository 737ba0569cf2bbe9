"""`mpcli train conf=NAME [overrides]`: compose, check, show the plan, launch, follow, summarise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mpcli.cli.common import (
    Overrides,
    RecipeDirs,
    TrustTargets,
    cuda_device_count,
    err_console,
    load_run,
    user_errors,
)
from mpcli.config.paths import check_run_paths
from mpcli.config.schema import RunConfig
from mpcli.config.target import trusting
from mpcli.config.validate import check_auto_resume
from mpcli.launch import WorkerFailure, launch
from mpcli.plan import plan_table, speed_tip, with_split
from mpcli.progress import RunProgress, summary_table
from mpcli.train.metrics import read_metrics


def new_run_dir(run: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(run.run_root) / run.name / stamp


@contextmanager
def _quiet_elastic(run_dir: Path, verbose: bool) -> Iterator[None]:
    """torch elastic's agent logs go to run_dir/logs/launcher.log, not the terminal, while the run lasts."""
    if verbose:
        yield
        return
    run_dir.joinpath("logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "logs" / "launcher.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [
        logging.getLogger(name)
        for name in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
    ]
    before = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        for logger, (handlers, propagate) in zip(loggers, before, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


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
    trust_target: TrustTargets = None,
) -> None:
    """Train: `mpcli train conf=gpt2-pipeline parallel.pp=4 train.steps=2000`."""
    with trusting(trust_target):
        _train(args, recipe_dir, run_dir, quiet=quiet, verbose=verbose)


def _train(
    args: list[str] | None, recipe_dir: list[Path] | None, run_dir: Path | None, *, quiet: bool, verbose: bool
) -> None:
    cuda_devices = cuda_device_count()
    run = load_run(args, recipe_dir)
    run_dir_key = "--run-dir" if run_dir else "run_root"
    run_dir = run_dir or new_run_dir(run)
    with user_errors():
        check_run_paths(run, run_dir, run_dir_key=run_dir_key)
        check_auto_resume(run, run_dir)
    run = with_split(run, cuda_devices)
    console = Console()
    plain = quiet or not console.is_terminal
    console.print(plan_table(run))
    tip = speed_tip(run, cuda_devices)
    if tip is not None:
        console.print(tip, highlight=False)
    console.print(f"run directory: {run_dir}", highlight=False)
    start = time.monotonic()
    try:
        with (
            _quiet_elastic(run_dir, verbose),
            RunProgress(run_dir / "metrics.jsonl", run.train.steps, console, plain=plain),
        ):
            launch(run, run_dir)
    except WorkerFailure as failure:
        err_console.print(f"[red]error:[/] {escape(str(failure))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted; logs in {escape(str(run_dir / 'logs'))}", highlight=False)
        raise typer.Exit(130) from None
    console.print(summary_table(read_metrics(run_dir / "metrics.jsonl"), run_dir, time.monotonic() - start))
    sys.stdout.flush()
