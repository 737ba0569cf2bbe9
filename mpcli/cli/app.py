"""The `mpcli` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from mpcli.cli import checkpoint, config, plan, recipes, report, train

app = typer.Typer(
    name="mpcli",
    help="Launch model-parallel PyTorch training from YAML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command(context_settings={"allow_interspersed_args": True})(train.train)
app.command(context_settings={"allow_interspersed_args": True})(plan.plan)
app.add_typer(config.app, name="config")
app.add_typer(recipes.app, name="recipes")
app.add_typer(checkpoint.app, name="checkpoint")
app.command()(report.report)


def main() -> None:
    app()
