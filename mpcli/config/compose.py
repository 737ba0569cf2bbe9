"""Compose a run config with Hydra's compose API over built-in groups and recipe directories.

`conf=NAME` is looked up by name along the recipe search path (highest priority first):
`--recipe-dir` options, `$MPCLI_RECIPE_PATH` (os.pathsep-separated), `./recipes`, built-in recipes.
A value ending in .yaml/.yml (or naming an existing file) is taken as a path. Every directory of the
search path is also on Hydra's search path, so a team recipe may build on a built-in one.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mpcli.config import slurm
from mpcli.config.input_checks import check_overrides, check_recipe_file, yaml_error_line
from mpcli.config.schema import RunConfig
from mpcli.errors import ConfigError

RECIPE_PATH_ENV = "MPCLI_RECIPE_PATH"
RECIPE_SUFFIXES = (".yaml", ".yml")


def _package_dir(name: str, repo_dir: str) -> Path:
    """A data directory shipped in the wheel (mpcli/_conf) or, in a checkout, the top-level folder."""
    checkout = Path(__file__).resolve().parents[2] / repo_dir
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("mpcli") / name))


def builtin_conf_dir() -> Path:
    return _package_dir("_conf", "conf")


def builtin_recipe_dir() -> Path:
    return _package_dir("_recipes", "recipes")


def recipe_search_path(recipe_dirs: list[Path] | None = None) -> list[Path]:
    """Directories searched for recipes, highest priority first."""
    dirs = [Path(d) for d in recipe_dirs or []]
    dirs += [Path(p) for p in os.environ.get(RECIPE_PATH_ENV, "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "recipes", builtin_recipe_dir()]
    seen: list[Path] = []
    for d in dirs:
        d = d.expanduser().resolve()
        if d not in seen:
            seen.append(d)
    return seen


def list_recipes(recipe_dirs: list[Path] | None = None) -> dict[str, Path]:
    """Recipe name -> file, the first directory on the search path winning."""
    found: dict[str, Path] = {}
    for d in recipe_search_path(recipe_dirs):
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.suffix in RECIPE_SUFFIXES:
                    found.setdefault(f.stem, f)
    return found


def find_recipe(conf: str, recipe_dirs: list[Path] | None = None) -> Path:
    as_path = Path(conf).expanduser()
    if conf.endswith(RECIPE_SUFFIXES) or as_path.is_file():
        if not as_path.is_file():
            raise ConfigError(f"conf={conf}: file not found; give a recipe name or an existing YAML file")
        return as_path.resolve()
    recipes = list_recipes(recipe_dirs)
    if conf in recipes:
        return recipes[conf]
    hint = difflib.get_close_matches(conf, list(recipes), n=1)
    suggestion = f"did you mean conf={hint[0]}?" if hint else f"known recipes: {', '.join(sorted(recipes))}"
    raise ConfigError(f"conf={conf}: no such recipe on the search path; {suggestion}")


def _register_schema() -> None:
    ConfigStore.instance().store(name="mpcli_schema", node=RunConfig)
    slurm.register_resolver()


def compose_dict(
    conf: str, overrides: list[str] | None = None, recipe_dirs: list[Path] | None = None
) -> DictConfig:
    """The composed, schema-checked config as a DictConfig (for printing)."""
    recipe = find_recipe(conf, recipe_dirs)
    if recipe.suffix != ".yaml":
        # Hydra (version_base >= 1.2) loads only .yaml files; a .yml recipe would fail as "not found".
        raise ConfigError(f"conf={conf}: {recipe.name} is not a .yaml file; rename it to {recipe.stem}.yaml")
    check_recipe_file(recipe, f"conf={conf}")
    check_overrides(overrides or [])
    search = [recipe.parent, *recipe_search_path(recipe_dirs), builtin_conf_dir()]
    searchpath = ",".join(f"file://{d}" for d in dict.fromkeys(search) if d.is_dir())
    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipe.parent), version_base="1.3"):
            cfg = hydra_compose(
                config_name=recipe.stem,
                overrides=[*(overrides or []), f"hydra.searchpath=[{searchpath}]"],
            )
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_friendly(exc)) from None
    except yaml.YAMLError as exc:  # a recipe named in the defaults of another
        raise ConfigError(f"conf={conf}: {yaml_error_line(exc)}") from None
    except RecursionError:
        raise ConfigError(
            f"conf={conf}: the defaults lists loop (a recipe includes itself, directly or through others)"
        ) from None
    finally:
        GlobalHydra.instance().clear()
    if "hydra" in cfg:
        with open_dict(cfg):  # lift struct mode to drop Hydra's own node
            del cfg["hydra"]
    _reject_unknown_keys(cfg, RunConfig)
    return cfg


def _reject_unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """`+key=value` can add keys that the schema does not know; they would be silently ignored."""
    known = {f.name: f for f in fields(schema)}
    for key in cfg:
        name = f"{prefix}{key}"
        if key not in known:
            hint = difflib.get_close_matches(name, _schema_keys(), n=1, cutoff=0.6)
            fix = f"did you mean {hint[0]}?" if hint else "remove it (the schema has no such key)"
            raise ConfigError(f"{name}: unknown config key; {fix}")
        sub = known[str(key)].default_factory
        if callable(sub) and is_dataclass(sub):
            node = cfg._get_node(key)
            if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
                raise ConfigError(f"{name}: must hold the keys of {name} (a mapping), not {node._value()!r}")
            _reject_unknown_keys(cfg[key], sub, f"{name}.")  # type: ignore[arg-type]


def compose(
    conf: str, overrides: list[str] | None = None, recipe_dirs: list[Path] | None = None
) -> RunConfig:
    """Compose, type-check and convert to a `RunConfig` (semantic checks live in validate.py)."""
    cfg = compose_dict(conf, overrides, recipe_dirs)
    try:
        run = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_friendly(exc)) from None
    if not isinstance(run, RunConfig):
        raise ConfigError(
            f"conf={conf}: the recipe does not build on the base config; list config (or another "
            "recipe) first in its defaults"
        )
    return run


def to_yaml(run: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(run))


def from_yaml(text: str) -> RunConfig:
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(text))
    run = OmegaConf.to_object(merged)
    assert isinstance(run, RunConfig)
    return run


def _schema_keys(node: type = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(node):
        keys.append(prefix + f.name)
        sub = f.default_factory if callable(f.default_factory) else None  # type: ignore[misc]
        if sub is not None and is_dataclass(sub):
            keys += _schema_keys(sub, f"{prefix}{f.name}.")  # type: ignore[arg-type]
    return keys


def _friendly(exc: BaseException) -> str:
    """One line naming the key and the fix, from Hydra/OmegaConf's multi-line messages."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    full = f"{text}\n{cause}" if cause else text
    missing_key = re.search(r"Key '([^']+)' (?:is )?not in '?([A-Za-z]+)", full)
    full_key = re.search(r"full_key: ([\w.\[\]]+)", full)
    if missing_key:
        key = full_key.group(1) if full_key else missing_key.group(1)
        hint = difflib.get_close_matches(key, _schema_keys(), n=1, cutoff=0.6)
        fix = f"did you mean {hint[0]}?" if hint else "check the spelling, or add it with +key=value"
        return f"{key}: unknown config key; {fix}"
    bad_value = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", full)
    if bad_value and full_key:
        return f"{full_key.group(1)}={bad_value.group(1)}: expected a value of type {bad_value.group(2)}"
    group = re.search(r"Could not find '([^']+)'", full)
    if group:
        options = re.search(r"Available options in '[^']+':\n((?:\t\S+\n)+)", full)
        known = ", ".join(options.group(1).split()) if options else "see conf/"
        return f"{group.group(1)}: no such config group option; available: {known}"
    env = re.search(r"Environment variable '(\w+)' not found", full)
    if env and full_key:
        slurm_hint = " (topology=slurm runs inside a SLURM allocation, under srun)"
        where = slurm_hint if env.group(1).startswith("SLURM") else ""
        return f"{full_key.group(1)}: environment variable {env.group(1)} is not set{where}"
    deletion = re.search(r"does not support deletion\s+full_key: ([\w.]+)", full)
    if deletion:
        return f"~{deletion.group(1)}: schema keys cannot be removed; set a value instead"
    not_optional = re.search(r"field '[^']+' is not Optional", full)
    if not_optional and full_key:
        return f"{full_key.group(1)}: cannot be null; set a value"
    lines = [line.strip() for line in full.splitlines() if line.strip()] or [type(exc).__name__]
    first = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return f"config error: {first}"
