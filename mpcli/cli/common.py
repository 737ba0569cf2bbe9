"""Pieces shared by the command groups: argument types, config loading, one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mpcli.cli.completion import complete_conf
from mpcli.config.compose import compose
from mpcli.config.schema import RunConfig
from mpcli.config.validate import validate
from mpcli.errors import ConfigError

DEFAULT_RECIPE = "gpt2-pipeline"

Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="conf=NAME|FILE.yaml picks the recipe; every other item is a Hydra override "
        "(a.b=v, +a.b=v, group=option).",
        show_default=False,
        autocompletion=complete_conf,
    ),
]
RecipeDirs = Annotated[
    list[Path] | None,
    typer.Option("--recipe-dir", help="Extra recipe directory, searched first (repeatable)."),
]

TrustTargets = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-target",
        metavar="PATTERN",
        help="Let model._target_ names matching PATTERN (fnmatch, e.g. 'myteam.models.*') be any callable, "
        "not only an nn.Module class (repeatable; also MPCLI_TRUST_TARGET, comma-separated).",
    ),
]

err_console = Console(stderr=True)


def split_conf(args: list[str] | None) -> tuple[str, list[str]]:
    """Separate `conf=NAME` from the Hydra overrides."""
    conf, overrides = DEFAULT_RECIPE, []
    for arg in args or []:
        if arg.startswith("conf="):
            conf = arg.removeprefix("conf=")
        else:
            overrides.append(arg)
    return conf, overrides


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def user_errors() -> Iterator[None]:
    """A `ConfigError` becomes one red line on stderr and exit code 2, without a traceback."""
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def load_run(
    args: list[str] | None, recipe_dirs: list[Path] | None, *, check: bool = True, user_code: bool = True
) -> RunConfig:
    """Compose and (with `check`) validate; `user_code=False` keeps a custom model's module unimported."""
    conf, overrides = split_conf(args)
    with user_errors():
        run = compose(conf, overrides, recipe_dirs)
        if check:
            validate(run, cuda_devices=cuda_device_count(), user_code=user_code)
    return run
