"""`mpcli config show`: the resolved config of a recipe plus overrides."""

from __future__ import annotations

import typer

from mpcli.cli.common import Overrides, RecipeDirs, load_run
from mpcli.config.compose import to_yaml

app = typer.Typer(help="Inspect composed configs.", no_args_is_help=True)


@app.command()
def show(args: Overrides = None, recipe_dir: RecipeDirs = None) -> None:
    """Print the resolved YAML of `conf=NAME [overrides]` (checked, nothing launched or imported)."""
    typer.echo(to_yaml(load_run(args, recipe_dir, user_code=False)), nl=False)
