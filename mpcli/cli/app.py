"""The `mpcli` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from mpcli.cli import config, train

app = typer.Typer(
    name="mpcli",
    help="Launch model-parallel PyTorch training from YAML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command(context_settings={"allow_interspersed_args": True})(train.train)
app.add_typer(config.app, name="config")


def main() -> None:
    app()
