"""`mpcli recipes list|show|new|validate`: find, read, copy and check the recipes a team shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mpcli.cli import common
from mpcli.cli.common import DEFAULT_RECIPE, RecipeDirs, load_run, user_errors
from mpcli.cli.completion import complete_recipe
from mpcli.config.compose import compose, find_recipe, to_yaml
from mpcli.config.recipes import (
    check_name,
    layout,
    model_name,
    recipes_in_dir,
    recipes_on_path,
    renamed_recipe_text,
    source_label,
)
from mpcli.config.validate import validate
from mpcli.errors import ConfigError

app = typer.Typer(help="List, show, copy and validate recipes.", no_args_is_help=True)

RecipeName = Annotated[
    str,
    typer.Argument(help="Recipe name on the search path, or a YAML file.", autocompletion=complete_recipe),
]


def _where(path: Path) -> str:
    label = source_label(path.parent)
    return label if label == "built-in" else f"{label}/{path.name}"


@app.command("list")
def list_recipes(recipe_dir: RecipeDirs = None) -> None:
    """Recipes on the search path: name, directory, model, layout and what each is for."""
    with user_errors():
        recipes = recipes_on_path(recipe_dir)
    table = Table(title="recipes (search path: --recipe-dir, $MPCLI_RECIPE_PATH, ./recipes, built-in)")
    for column in ("name", "source", "model", "layout"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", ratio=1)
    for recipe in recipes:
        try:
            run = compose(str(recipe.path), [], recipe_dir)
            model, parallel = model_name(run), layout(run)
        except ConfigError:
            model, parallel = "[red]?[/]", "[red]does not compose[/]"
        where, description = source_label(recipe.path.parent), recipe.header.description
        table.add_row(escape(recipe.name), escape(where), model, parallel, escape(description))
    Console().print(table)


@app.command()
def show(
    name: RecipeName,
    resolved: Annotated[
        bool, typer.Option("--resolved", help="Print the composed config instead of the file.")
    ] = False,
    recipe_dir: RecipeDirs = None,
) -> None:
    """Print a recipe file as written (or, with --resolved, the config it composes to)."""
    if resolved:
        typer.echo(to_yaml(load_run([f"conf={name}"], recipe_dir, check=False)), nl=False)
        return
    with user_errors():
        path = find_recipe(name, recipe_dir)
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="Name of the new recipe (its file is NAME.yaml).")],
    source: Annotated[
        str,
        typer.Option("--from", help="Recipe to copy (name or file).", autocompletion=complete_recipe),
    ] = DEFAULT_RECIPE,
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the copy.")] = Path("recipes"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    recipe_dir: RecipeDirs = None,
) -> None:
    """Copy a recipe into ./recipes under a new name, ready to edit."""
    with user_errors():
        check_name(name)
        origin = find_recipe(source, recipe_dir)
        target = directory / f"{name}.yaml"
        if target.exists() and target.resolve() == origin.resolve():
            raise ConfigError(f"--from {source}: is {target} itself; pick another name")
        if target.exists() and not force:
            raise ConfigError(f"{target}: already exists; pass --force to overwrite it")
        text = renamed_recipe_text(origin.read_text(encoding="utf-8"), old=origin.stem, new=name)
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    console = Console(soft_wrap=True, highlight=False)
    console.print(escape(f"created {target} (a copy of {origin.stem}, {_where(origin)})"))
    try:
        picked = find_recipe(name, recipe_dir)
    except ConfigError:
        picked = None
    if picked == target.resolve():
        console.print(escape(f"run it with: mpcli train conf={name}"))
    else:
        shadow = f"conf={name} picks {picked}" if picked else f"{directory} is not on the search path"
        console.print(escape(f"note: {shadow}; run this copy with: mpcli train conf={target}"))


@dataclass
class Check:
    """One line of `recipes validate`: a recipe file, or an argument that named none."""

    name: str
    path: Path | None
    error: str | None = None

    @property
    def where(self) -> str:
        return _where(self.path) if self.path else "not found"

    def line(self, width: int) -> str:
        text = escape(f"{self.name:<{width}}  {self.where}")
        if self.error is None:
            return f"[green]ok[/]    {text}"
        return f"[red]FAIL[/]  {text}: {escape(self.error)}"


def _checks(paths: list[str] | None, recipe_dirs: list[Path] | None) -> list[Check]:
    """Recipes to check: directories expand to their YAML files; a name that is not found is a failure."""
    if not paths:
        return [Check(r.name, r.path) for r in recipes_on_path(recipe_dirs)]
    checks: list[Check] = []
    for item in paths:
        if Path(item).is_dir():
            checks += [Check(r.name, r.path) for r in recipes_in_dir(Path(item))]
            continue
        try:
            path = find_recipe(item, recipe_dirs)
            checks.append(Check(path.stem, path))
        except ConfigError as exc:
            checks.append(Check(item, None, str(exc)))
    return checks


@app.command("validate")
def validate_recipes(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Recipe names, files or directories (default: every recipe on the search path).",
            autocompletion=complete_recipe,
            show_default=False,
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(help="Check as if N GPUs were visible per node (default: this machine's)."),
    ] = None,
    recipe_dir: RecipeDirs = None,
) -> None:
    """Compose and check each recipe without launching; exit code 1 when any fails (for CI)."""
    with user_errors():
        checks = _checks(paths, recipe_dir)
    cuda_devices = gpus if gpus is not None else common.cuda_device_count()
    width = max((len(c.name) for c in checks), default=0)
    console = Console(soft_wrap=True, highlight=False)
    for check in checks:
        if check.path is not None:
            try:
                run = compose(str(check.path), [], recipe_dir)
                validate(run, cuda_devices=cuda_devices, user_code=False)
            except ConfigError as exc:
                check.error = str(exc)
        console.print(check.line(width))
    if any(c.error for c in checks):
        raise typer.Exit(1)
