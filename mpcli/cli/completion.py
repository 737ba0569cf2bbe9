"""Shell completion of recipe names (`mpcli --install-completion` sets it up in the user's shell).

Typer calls these with the partly parsed command line, so a `--recipe-dir` given before the word
being completed is searched too. Completion must never fail loudly: a broken recipe directory simply
offers nothing from it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mpcli.config.recipes import Recipe, recipes_on_path
from mpcli.errors import ConfigError

CONF_PREFIX = "conf="
# Typer wraps long help texts over several lines, which breaks zsh's completion list.
HELP_CHARS = 60


def _recipes(ctx: typer.Context) -> list[Recipe]:
    dirs = ctx.params.get("recipe_dir") or []  # click's parsed parameters, not a config
    try:
        return recipes_on_path([Path(d) for d in dirs])
    except ConfigError:
        return []


def _help(recipe: Recipe) -> str:
    text = recipe.header.description
    return text if len(text) <= HELP_CHARS else text[: HELP_CHARS - 1] + "…"


def complete_recipe(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Recipe names with their one-line description, for NAME arguments."""
    return [(r.name, _help(r)) for r in _recipes(ctx) if r.name.startswith(incomplete)]


def complete_conf(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """`conf=NAME` items among the Hydra overrides of `train` and `config show`."""
    if not (incomplete.startswith(CONF_PREFIX) or CONF_PREFIX.startswith(incomplete)):
        return []
    typed = incomplete[len(CONF_PREFIX) :] if incomplete.startswith(CONF_PREFIX) else ""
    return [(f"{CONF_PREFIX}{r.name}", _help(r)) for r in _recipes(ctx) if r.name.startswith(typed)]
