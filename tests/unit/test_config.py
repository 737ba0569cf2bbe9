"""Composing run configs: built-in recipes, group swaps, recipe files, team recipe directories, YAML."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mpcli.config.compose import (
    RECIPE_PATH_ENV,
    builtin_recipe_dir,
    compose,
    from_yaml,
    list_recipes,
    to_yaml,
)
from mpcli.config.schema import RunConfig
from mpcli.config.validate import validate
from mpcli.errors import ConfigError

BUILTIN_RECIPES = sorted(p.stem for p in builtin_recipe_dir().glob("*.yaml"))

# A team recipe that builds on the built-in gpt2-pipeline recipe.
TEAM_RECIPE = """\
defaults:
  - gpt2-pipeline
  - _self_

name: team-pp
train:
  steps: 7
"""


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the built-in recipes are found unless a test adds a directory: no env, no ./recipes."""
    monkeypatch.delenv(RECIPE_PATH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_recipes_are_found() -> None:
    assert "gpt2-pipeline" in BUILTIN_RECIPES
    assert set(BUILTIN_RECIPES) <= set(list_recipes())


@pytest.mark.parametrize("name", BUILTIN_RECIPES)
def test_builtin_recipe_composes_and_validates(name: str) -> None:
    run = compose(name)
    assert isinstance(run, RunConfig)
    if run.topology.device == "cuda":
        run = compose(name, ["topology.device=cpu"])
    validate(run, cuda_devices=0)


def test_gpt2_pipeline_recipe_values() -> None:
    run = compose("gpt2-pipeline")
    assert run.name == "gpt2-pipeline"
    assert (run.model.size, run.model.n_layer, run.model.d_model) == ("small", 12, 768)
    assert (run.parallel.pp, run.parallel.schedule, run.parallel.microbatches) == (2, "1f1b", 8)
    assert run.train.lr == pytest.approx(6e-4)
    assert run.train.warmup == 20


def test_value_overrides_apply() -> None:
    run = compose("gpt2-pipeline", ["train.steps=3", "parallel.split=[5,7]", "topology.device=cpu"])
    assert run.train.steps == 3
    assert run.parallel.split == [5, 7]
    assert run.topology.device == "cpu"


def test_group_swap_changes_model() -> None:
    small = compose("gpt2-pipeline")
    medium = compose("gpt2-pipeline", ["model=gpt2-medium"])
    assert (small.model.n_layer, small.model.d_model) == (12, 768)
    assert (medium.model.size, medium.model.n_layer, medium.model.d_model) == ("medium", 24, 1024)
    # Only the model group changed.
    assert medium.parallel == small.parallel
    assert medium.train == small.train


def test_conf_as_yaml_file_path(tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "elsewhere" / "mine.yaml",
        "defaults:\n  - config\n  - _self_\n\nname: mine\nmodel:\n  n_layer: 6\ntrain:\n  steps: 17\n",
    )
    run = compose(str(recipe))
    assert run.name == "mine"
    assert run.model.n_layer == 6
    assert run.train.steps == 17
    # Everything else comes from conf/config.yaml and the schema.
    assert run.model.size == "tiny"
    assert run.parallel.pp == 1
    validate(run, cuda_devices=0)


def test_overrides_win_over_recipe_file(tmp_path: Path) -> None:
    recipe = write(tmp_path / "mine.yaml", "defaults:\n  - config\n  - _self_\n\ntrain:\n  steps: 17\n")
    assert compose(str(recipe), ["train.steps=5"]).train.steps == 5


def test_yml_recipe_gets_a_clear_error(tmp_path: Path) -> None:
    # Hydra only loads .yaml; a .yml recipe must say so instead of "cannot find primary config".
    recipe = write(tmp_path / "team" / "mine.yml", "defaults:\n  - config\n  - _self_\n")
    for conf, dirs in ((str(recipe), None), ("mine", [recipe.parent])):
        with pytest.raises(ConfigError, match=r"mine\.yml is not a \.yaml file; rename it to mine\.yaml"):
            compose(conf, recipe_dirs=dirs)


def test_team_recipe_not_found_without_its_directory() -> None:
    with pytest.raises(ConfigError, match="conf=team-pp"):
        compose("team-pp")


def check_team_recipe(run: RunConfig) -> None:
    assert run.name == "team-pp"
    assert run.train.steps == 7
    # Inherited from the built-in gpt2-pipeline recipe.
    assert run.model.size == "small"
    assert run.parallel.pp == 2
    assert run.train.lr == pytest.approx(6e-4)


def test_team_recipe_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    team = tmp_path / "team"
    write(team / "team-pp.yaml", TEAM_RECIPE)
    # os.pathsep-separated; a missing directory on the path is harmless.
    monkeypatch.setenv(RECIPE_PATH_ENV, f"{tmp_path / 'no-such-dir'}{os.pathsep}{team}")
    check_team_recipe(compose("team-pp"))


def test_team_recipe_dir_from_argument(tmp_path: Path) -> None:
    team = tmp_path / "team"
    write(team / "team-pp.yaml", TEAM_RECIPE)
    check_team_recipe(compose("team-pp", recipe_dirs=[team]))


def test_team_recipe_from_cwd_recipes(tmp_path: Path) -> None:
    write(tmp_path / "recipes" / "team-pp.yaml", TEAM_RECIPE)  # tmp_path is the cwd
    check_team_recipe(compose("team-pp"))


def test_recipe_dir_argument_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "env" / "team-pp.yaml", TEAM_RECIPE)
    write(tmp_path / "arg" / "team-pp.yaml", TEAM_RECIPE.replace("steps: 7", "steps: 9"))
    monkeypatch.setenv(RECIPE_PATH_ENV, str(tmp_path / "env"))
    assert compose("team-pp").train.steps == 7
    assert compose("team-pp", recipe_dirs=[tmp_path / "arg"]).train.steps == 9


def test_team_recipe_shadows_builtin_name(tmp_path: Path) -> None:
    team = tmp_path / "team"
    write(team / "gpt2-pipeline.yaml", "defaults:\n  - config\n  - _self_\n\nname: team-version\n")
    assert compose("gpt2-pipeline", recipe_dirs=[team]).name == "team-version"
    assert compose("gpt2-pipeline").name == "gpt2-pipeline"


def test_yaml_round_trip_of_default() -> None:
    run = RunConfig()
    assert from_yaml(to_yaml(run)) == run


def test_yaml_round_trip_of_composed_run(tmp_path: Path) -> None:
    run = compose(
        "gpt2-pipeline",
        [
            "model=gpt2-tiny",
            "parallel.split=[3,1]",
            "topology.nproc_per_node=2",
            "topology.rdzv_endpoint=node0:29500",
            f"data.path={tmp_path / 'tokens.bin'}",
            "train.peak_tflops=312.5",
            "name=123",  # a string that looks like a number must stay a string
        ],
    )
    text = to_yaml(run)
    assert "n_layer: 4" in text
    back = from_yaml(text)
    assert back == run
    assert back.name == "123"
    assert back.parallel.split == [3, 1]
