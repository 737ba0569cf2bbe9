"""Recipes as files: their header comment, where they come from, copying one under a new name.

Every recipe starts with a comment block: the first line is the command that runs it
(`# mpcli train conf=NAME`), the next line says what it is for. Composing and checking live in
compose.py and validate.py; this module only reads and writes the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mpcli.config.compose import RECIPE_SUFFIXES, builtin_recipe_dir, list_recipes
from mpcli.config.schema import RunConfig
from mpcli.errors import ConfigError

RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_KEY = re.compile(r"^name:.*$", re.MULTILINE)


@dataclass(frozen=True)
class RecipeHeader:
    command: str  # "mpcli train conf=NAME ..." without the "# ", or "" when the header has none
    description: str  # the first comment line after the command, or ""


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    header: RecipeHeader


def _header_lines(text: str) -> list[str]:
    """The leading comment lines, without their "#" (blank lines inside the block are skipped)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        lines.append(stripped.lstrip("#").strip())
    return lines


def read_header(text: str) -> RecipeHeader:
    lines = [line for line in _header_lines(text) if line]
    command = lines[0] if lines and lines[0].startswith("mpcli ") else ""
    rest = lines[1:] if command else lines
    return RecipeHeader(command=command, description=rest[0] if rest else "")


def recipes_on_path(recipe_dirs: list[Path] | None = None) -> list[Recipe]:
    """Every recipe that `conf=NAME` can pick (the first on the search path wins), sorted by name."""
    found = list_recipes(recipe_dirs)
    return [Recipe(name, found[name], read_header(_read(found[name]))) for name in sorted(found)]


def recipes_in_dir(directory: Path) -> list[Recipe]:
    files = sorted(f for f in directory.iterdir() if f.suffix in RECIPE_SUFFIXES and f.is_file())
    return [Recipe(f.stem, f.resolve(), read_header(_read(f))) for f in files]


def source_label(directory: Path) -> str:
    """A short name for a recipe directory: "built-in", a path below the cwd, or a ~ path."""
    directory = directory.resolve()
    if directory == builtin_recipe_dir().resolve():
        return "built-in"
    for base, shown in ((Path.cwd(), "."), (Path.home(), "~")):
        if directory.is_relative_to(base):
            rel = directory.relative_to(base)
            return shown if rel == Path(".") else f"{shown}/{rel}"
    return str(directory)


def check_name(name: str) -> None:
    if name.endswith(RECIPE_SUFFIXES):
        raise ConfigError(f"recipe name {name}: give the name without the file suffix")
    if not RECIPE_NAME.fullmatch(name):
        raise ConfigError(f"recipe name {name}: use letters, digits, '-', '_' and '.' only")


def renamed_recipe_text(text: str, *, old: str, new: str) -> str:
    """A copy of recipe `old` as recipe `new`: `conf=old` in the header and `name:` point to `new`."""
    lines = text.splitlines(keepends=True)
    header_end = next(
        (i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")),
        len(lines),
    )
    conf = re.compile(rf"\bconf={re.escape(old)}(?![\w.-])")
    header = [conf.sub(f"conf={new}", line) for line in lines[:header_end]]
    if not any(f"conf={new}" in line for line in header):
        header.insert(0, f"# mpcli train conf={new}\n")
    body = "".join(lines[header_end:])
    if _NAME_KEY.search(body):
        body = _NAME_KEY.sub(f"name: {new}", body, count=1)
    else:
        body = body + ("" if body.endswith("\n") or not body else "\n") + f"name: {new}\n"
    return "".join(header) + body


def model_name(run: RunConfig) -> str:
    return f"{run.model.family}-{run.model.size}"


def layout(run: RunConfig) -> str:
    """Degrees, and the schedule when there is a pipeline: "pp=2 tp=1 dp=1 1f1b"."""
    p = run.parallel
    degrees = f"pp={p.pp} tp={p.tp} dp={p.dp}"
    return f"{degrees} {p.schedule}" if p.pp > 1 else degrees


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc.__class__.__name__})") from None
