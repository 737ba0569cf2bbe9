"""Bad recipe files, override arguments, paths and data files: one line naming the culprit, exit 2,
no traceback, nothing launched and no run directory made."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mpcli.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_cli")
TINY = ["model=gpt2-tiny", "topology.device=cpu"]


def one_error_line(args: list[str], launches: list[tuple[Any, ...]], tmp_path: Path) -> str:
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    assert launches == [] and not (tmp_path / "runs").exists()
    return lines[0]


RECIPES = [
    pytest.param("", "is empty; a recipe is a YAML mapping", id="empty"),
    pytest.param("# only a comment\n", "is empty", id="only-comment"),
    pytest.param("a: [1,\n", "is not valid YAML (line 2", id="not-yaml"),
    pytest.param("- config\n- x\n", "holds a list; a recipe is a YAML mapping", id="list"),
    pytest.param("just words\n", "holds a str", id="scalar"),
    pytest.param("defaults: config\n", "defaults must be a list", id="defaults-not-list"),
    pytest.param("x: !!python/object/apply:os.system [echo hi]\n", "is not valid YAML", id="python-tag"),
    pytest.param("defaults:\n  - nosuch-recipe\n", "nosuch-recipe", id="defaults-missing"),
    pytest.param("defaults:\n  - team\n", "the defaults lists loop", id="defaults-itself"),
    pytest.param("defaults:\n  - other\n", "other.yaml: not valid YAML", id="defaults-broken"),
    pytest.param("name: x\n", "does not build on the base config", id="no-base"),
]


@pytest.mark.parametrize(("text", "fragment"), RECIPES)
def test_a_bad_recipe_file(text: str, fragment: str, tmp_path: Path, launches: list[tuple[Any, ...]]) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "team.yaml").write_text(text)
    (tmp_path / "recipes" / "other.yaml").write_text("a: [1,\n")
    line = one_error_line(["conf=team"], launches, tmp_path)
    assert fragment in line
    assert "team" in line or "other" in line


OVERRIDES = [
    pytest.param("=3", "=3: the key is empty", id="empty-key"),
    pytest.param("+=1", "+=1: the key is empty", id="empty-added-key"),
    pytest.param("~", "~: the key is empty", id="empty-deleted-key"),
    pytest.param("train.steps=", "train.steps=: the value is empty", id="empty-value"),
    pytest.param("model=", "model=: the value is empty", id="empty-group"),
    pytest.param("train.steps", "train.steps: not a valid override", id="no-equals"),
    pytest.param("train..steps=3", "train..steps=3: not a valid override", id="double-dot"),
    pytest.param("train.steps=[1", "train.steps=[1: not a valid override", id="unclosed"),
    pytest.param(" ", "an empty argument", id="blank"),
]


@pytest.mark.parametrize(("override", "fragment"), OVERRIDES)
def test_a_bad_override_names_the_argument(
    override: str, fragment: str, tmp_path: Path, launches: list[tuple[Any, ...]]
) -> None:
    assert fragment in one_error_line(["conf=gpt2-pipeline", override], launches, tmp_path)


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


PATHS: list[Any] = [
    pytest.param(lambda d: ["name=" + "n" * 300], "name: 300 bytes is too long", id="long-name"),
    pytest.param(lambda d: ["name=a/b"], "must be one directory name", id="name-with-slash"),
    pytest.param(lambda d: [f"run_root={_file(d / 'f')}"], "exists and is not a directory", id="root-file"),
    pytest.param(lambda d: [f"run_root={_file(d / 'f')}/x"], "is a file, so no directory", id="under-file"),
    pytest.param(lambda d: ["run_root=" + "r" * 300], "longer than 255 bytes", id="long-part"),
    pytest.param(lambda d: [f"--run-dir={_file(d / 'f')}"], "--run-dir=", id="run-dir-file"),
    pytest.param(lambda d: [f"checkpoint.dir={_file(d / 'f')}"], "checkpoint.dir=", id="ckpt-dir-file"),
]


@pytest.mark.parametrize(("make", "fragment"), PATHS)
def test_a_bad_path(
    make: Callable[[Path], list[str]], fragment: str, tmp_path: Path, launches: list[tuple[Any, ...]]
) -> None:
    args = make(tmp_path)
    assert fragment in one_error_line(["conf=gpt2-pipeline", *TINY, *args], launches, tmp_path)


def test_a_run_root_that_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launches: list[tuple[Any, ...]]
) -> None:
    monkeypatch.setattr("mpcli.config.paths.os.access", lambda path, mode: False)  # as a non-root user
    line = one_error_line(["conf=gpt2-pipeline", *TINY], launches, tmp_path)
    assert f"run_root=runs: {tmp_path} is not writable" in line


@pytest.mark.parametrize(
    ("tokens", "fragment"),
    [
        (np.arange(5000, dtype=np.uint16).tobytes() + b"\0", "10001 bytes is not a whole number of uint16"),
        (
            np.array([20240520, 1, 9999], dtype=np.int32).tobytes() + bytes(1012) + bytes(10),
            "its llm.c header announces 9999",
        ),
    ],
    ids=["odd-size", "llmc-count"],
)
def test_a_token_file_that_does_not_fit_its_dtype(
    tokens: bytes, fragment: str, tmp_path: Path, launches: list[tuple[Any, ...]]
) -> None:
    (tmp_path / "t.bin").write_bytes(tokens)
    args = ["conf=gpt2-pipeline", *TINY, "data=tokens", "data.path=t.bin"]
    assert f"data.path=t.bin: {fragment}" in one_error_line(args, launches, tmp_path)


def test_brackets_in_a_message_are_text_not_markup(tmp_path: Path, launches: list[tuple[Any, ...]]) -> None:
    """A path or value holding `[/...]` would close a rich markup tag and crash the error printer."""
    line = one_error_line(["conf=team[/x].yaml"], launches, tmp_path)
    assert "conf=team[/x].yaml: file not found" in line
