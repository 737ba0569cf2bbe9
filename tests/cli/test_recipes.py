"""`mpcli recipes list|show|new|validate` and recipe-name completion, on real files in temp dirs.

The search path of these tests: a `--recipe-dir`, a team directory on MPCLI_RECIPE_PATH, ./recipes
(in the temporary cwd) and the built-in recipes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mpcli.cli.app import app
from mpcli.config.compose import RECIPE_PATH_ENV, compose, from_yaml

runner = CliRunner()
WIDE = {"COLUMNS": "320"}  # rich tables at full width, nothing cut short

TEAM_GPT2 = """\
# mpcli train conf=team-gpt2
# Our GPT-2 medium pipeline with a longer warm-up.
defaults:
  - gpt2-pipeline
  - override model: gpt2-medium
  - _self_
name: team-gpt2
train:
  warmup: 200
"""
BROKEN = """\
# mpcli train conf=broken
# A typo that validate must catch.
defaults:
  - config
  - _self_
train:
  stepz: 3
"""
ON_GPUS = """\
# mpcli train conf=on-gpus
# Four stages on four GPUs.
defaults:
  - gpt2-pipeline
  - _self_
parallel:
  pp: 4
topology:
  device: cuda
"""


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A team recipe directory on MPCLI_RECIPE_PATH; cwd is an empty directory; no GPUs."""
    directory = tmp_path / "team"
    directory.mkdir()
    (directory / "team-gpt2.yaml").write_text(TEAM_GPT2)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv(RECIPE_PATH_ENV, str(directory))
    monkeypatch.setattr("mpcli.cli.common.cuda_device_count", lambda: 0)
    return directory


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def row(output: str, name: str) -> list[str]:
    """The cells of a recipe's row in the `recipes list` table."""
    found = [line for line in output.splitlines() if line.startswith(f"│ {name} ")]
    assert len(found) == 1, output
    return [cell.strip() for cell in found[0].strip("│").split("│")]


def test_list_shows_every_source(team: Path, tmp_path: Path) -> None:
    local = Path("recipes")
    local.mkdir()
    (local / "broken.yaml").write_text(BROKEN)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "on-gpus.yaml").write_text(ON_GPUS)

    result = runner.invoke(app, ["recipes", "list", "--recipe-dir", str(extra)], env=WIDE)
    assert result.exit_code == 0, result.output
    pipeline = row(result.stdout, "gpt2-pipeline")
    assert pipeline[1:4] == ["built-in", "gpt2-small", "pp=2 tp=1 dp=1 1f1b"]
    assert pipeline[4].startswith("GPT-2 small split into 2 pipeline stages")
    assert row(result.stdout, "team-gpt2") == [
        "team-gpt2", str(team), "gpt2-medium", "pp=2 tp=1 dp=1 1f1b",
        "Our GPT-2 medium pipeline with a longer warm-up.",
    ]  # fmt: skip
    assert row(result.stdout, "broken") == [
        "broken", "./recipes", "?", "does not compose", "A typo that validate must catch."
    ]  # fmt: skip
    assert row(result.stdout, "on-gpus")[1:4] == [str(extra), "gpt2-small", "pp=4 tp=1 dp=1 1f1b"]


def test_show_prints_the_file_or_the_resolved_config(team: Path) -> None:
    result = runner.invoke(app, ["recipes", "show", "team-gpt2"])
    assert result.exit_code == 0, result.output
    assert result.stdout == TEAM_GPT2

    result = runner.invoke(app, ["recipes", "show", "team-gpt2", "--resolved"])
    assert result.exit_code == 0, result.output
    run = from_yaml(result.stdout)
    assert (run.name, run.model.n_layer, run.parallel.pp, run.train.warmup) == ("team-gpt2", 24, 2, 200)


def test_show_unknown_recipe_is_one_line(team: Path) -> None:
    result = runner.invoke(app, ["recipes", "show", "team-gtp2"])
    assert result.exit_code == 2
    assert lines(result.stderr) == [
        "error: conf=team-gtp2: no such recipe on the search path; did you mean conf=team-gpt2?"
    ]
    assert "Traceback" not in result.output


def test_new_copies_renames_and_never_overwrites(team: Path) -> None:
    result = runner.invoke(app, ["recipes", "new", "my-gpt2", "--from", "gpt2-pipeline"])
    assert result.exit_code == 0, result.output
    assert "run it with: mpcli train conf=my-gpt2" in result.stdout
    text = Path("recipes/my-gpt2.yaml").read_text()
    header = text.splitlines()[:3]
    assert header[0] == "# mpcli train conf=my-gpt2"
    assert (
        header[2]
        == "# On a laptop: mpcli train conf=my-gpt2 model=gpt2-tiny topology.device=cpu train.steps=300"
    )
    assert "conf=gpt2-pipeline" not in text
    run = compose("my-gpt2")
    assert (run.name, run.model.size, run.parallel.pp, run.train.lr) == ("my-gpt2", "small", 2, 6.0e-4)

    Path("recipes/my-gpt2.yaml").write_text(text + "# my edits\n")
    again = runner.invoke(app, ["recipes", "new", "my-gpt2", "--from", "team-gpt2"])
    assert again.exit_code == 2
    assert lines(again.stderr) == [
        "error: recipes/my-gpt2.yaml: already exists; pass --force to overwrite it"
    ]
    assert Path("recipes/my-gpt2.yaml").read_text().endswith("# my edits\n")

    forced = runner.invoke(app, ["recipes", "new", "my-gpt2", "--from", "team-gpt2", "--force"])
    assert forced.exit_code == 0, forced.output
    assert compose("my-gpt2").model.size == "medium"
    assert Path("recipes/my-gpt2.yaml").read_text().startswith("# mpcli train conf=my-gpt2\n# Our GPT-2")


def test_new_says_when_an_earlier_directory_shadows_the_copy(team: Path) -> None:
    result = runner.invoke(app, ["recipes", "new", "team-gpt2", "--from", "gpt2-pipeline"])
    assert result.exit_code == 0, result.output
    assert f"note: conf=team-gpt2 picks {team / 'team-gpt2.yaml'}" in result.stdout
    assert "mpcli train conf=recipes/team-gpt2.yaml" in result.stdout


@pytest.mark.parametrize(
    ("name", "problem"),
    [("my/gpt2", "use letters, digits"), ("my.yaml", "without the file suffix"), ("x", "conf=nope")],
)
def test_new_bad_input(team: Path, name: str, problem: str) -> None:
    result = runner.invoke(
        app, ["recipes", "new", name, "--from", "nope" if name == "x" else "gpt2-pipeline"]
    )
    assert result.exit_code == 2
    assert len(lines(result.stderr)) == 1 and problem in result.stderr
    assert not Path("recipes").exists()


def test_validate_all_recipes_on_the_search_path(team: Path) -> None:
    result = runner.invoke(app, ["recipes", "validate", "--gpus", "8"])
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)
    assert all(line.startswith("ok ") for line in out), result.stdout
    assert {line.split()[1] for line in out} >= {"gpt2-pipeline", "team-gpt2"}

    Path("recipes").mkdir()
    Path("recipes/broken.yaml").write_text(BROKEN)
    result = runner.invoke(app, ["recipes", "validate", "--gpus", "8"])
    assert result.exit_code == 1
    failed = [line.split(maxsplit=3) for line in lines(result.stdout) if not line.startswith("ok ")]
    error = "train.stepz: unknown config key; did you mean train.steps?"
    assert failed == [["FAIL", "broken", "./recipes/broken.yaml:", error]]


def test_validate_paths_directories_and_gpus(team: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "on-gpus.yaml").write_text(ON_GPUS)
    (repo / "team-copy.yaml").write_text(TEAM_GPT2)
    result = runner.invoke(app, ["recipes", "validate", str(repo), "team-gpt2", "nope"])
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert [line.split()[:2] for line in out] == [
        ["FAIL", "on-gpus"], ["ok", "team-copy"], ["ok", "team-gpt2"], ["FAIL", "nope"]
    ]  # fmt: skip
    assert out[0].endswith("topology.device=cuda: no CUDA device is visible; use topology.device=cpu")
    assert "not found: conf=nope: no such recipe" in out[3]

    result = runner.invoke(app, ["recipes", "validate", str(repo / "on-gpus.yaml"), "--gpus", "4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["recipes", "validate", str(repo / "on-gpus.yaml"), "--gpus", "2"])
    assert result.exit_code == 1
    assert "needs 4 GPUs per node but 2 are visible" in result.stdout


def complete(words: str, **env: str) -> list[str]:
    """What bash completion offers for the last word of `words`, through the real Typer machinery."""
    parts = words.split(" ")
    env = {"_MPCLI_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1), **env}
    result = runner.invoke(app, [], env=env, prog_name="mpcli")
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_completion_of_recipe_names(team: Path, tmp_path: Path) -> None:
    # Built-in recipes may grow: check for members, and that nothing else slips in.
    assert complete("mpcli train conf=te") == ["conf=team-gpt2"]
    offered = complete("mpcli train model=gpt2-tiny co")
    assert {"conf=gpt2-pipeline", "conf=team-gpt2"} <= set(offered)
    assert all(item.startswith("conf=") for item in offered)
    assert "conf=gpt2-pipeline" in complete("mpcli config show conf=gpt")
    assert complete("mpcli train model=gp") == []
    assert complete("mpcli recipes show te") == ["team-gpt2"]
    assert "gpt2-pipeline" in complete("mpcli recipes new x --from gp")
    assert {"gpt2-pipeline", "team-gpt2"} <= set(complete("mpcli recipes validate "))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "extra-one.yaml").write_text(ON_GPUS)
    assert complete(f"mpcli train --recipe-dir {extra} conf=ex") == ["conf=extra-one"]
