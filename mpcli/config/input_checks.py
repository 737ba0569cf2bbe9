"""Checks of what the user typed or was handed, before Hydra sees it: each override argument and the
recipe file itself. Hydra's own errors name neither the argument nor the file; these do."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import OverrideParseException

from mpcli.errors import ConfigError

OVERRIDE_FORMS = "expected key=value (e.g. train.steps=100), +key=value, group=option or ~key"


def check_overrides(overrides: list[str]) -> None:
    """Each argument parses as one Hydra override with a key and (unless deleting) a value."""
    parser = OverridesParser.create()
    for arg in overrides:
        if not arg.strip():
            raise ConfigError(f"an empty argument: {OVERRIDE_FORMS}")
        try:
            override = parser.parse_overrides([arg])[0]
        except OverrideParseException:
            raise ConfigError(f"{arg}: not a valid override; {OVERRIDE_FORMS}") from None
        if not override.key_or_group:
            raise ConfigError(f"{arg}: the key is empty; {OVERRIDE_FORMS}")
        if override.type is not OverrideType.DEL and arg.partition("=")[2] == "":
            raise ConfigError(f"{arg}: the value is empty; give one (null for none, '' for an empty string)")


def check_recipe_file(path: Path, key: str) -> None:
    """The recipe is readable text holding a YAML mapping whose `defaults`, if any, is a list."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not a text file") from None
    except OSError as exc:
        raise ConfigError(f"{key}: {path} cannot be read ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: {path} is not valid YAML ({_yaml_problem(exc)})") from None
    shape = "a YAML mapping that starts with a defaults list (see recipes/ for examples)"
    if doc is None:
        raise ConfigError(f"{key}: {path} is empty; a recipe is {shape}")
    if not isinstance(doc, dict):
        raise ConfigError(f"{key}: {path} holds a {type(doc).__name__}; a recipe is {shape}")
    if "defaults" in doc and not isinstance(doc["defaults"], list):
        raise ConfigError(f"{key}: {path}: defaults must be a list, e.g. [config, _self_]")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line for a YAML error Hydra met while loading a recipe that another recipe names."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}: " if mark is not None and mark.name else ""
    return f"{where}not valid YAML ({_yaml_problem(exc)})"
