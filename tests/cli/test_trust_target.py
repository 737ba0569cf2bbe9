"""A recipe cannot make mpcli call a function of its choosing; read-only commands import nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mpcli.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_cli")
MODEL = ["model.family=custom", "model.blocks=[inp,layers.0,out]", "model.in_features=4", "data=synthetic"]


def marker_model(marker: Path) -> list[str]:
    return [*MODEL, "model._target_=tests.fixtures.byo.write_marker", f"+model.kwargs={{path: '{marker}'}}"]


@pytest.mark.parametrize("command", ["train", "plan"])
def test_an_untrusted_factory_is_refused_before_it_runs(
    command: str, tmp_path: Path, launches: list[tuple[Any, ...]]
) -> None:
    marker = tmp_path / "called"
    result = runner.invoke(app, [command, "conf=gpt2-pipeline", *marker_model(marker)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model._target_=tests.fixtures.byo.write_marker" in lines[0]
    assert "--trust-target" in lines[0] and "Traceback" not in result.output
    assert not marker.exists() and launches == []


def test_a_trusted_factory_is_built(tmp_path: Path, launches: list[tuple[Any, ...]]) -> None:
    marker = tmp_path / "called"
    args = ["train", "conf=gpt2-pipeline", *marker_model(marker), "--trust-target", "tests.fixtures.byo.*"]
    result = runner.invoke(app, [*args, f"--run-dir={tmp_path / 'run'}", "--quiet"])
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "called" and len(launches) == 1


def test_config_show_does_not_import_the_model_module() -> None:
    sys.modules.pop("tests.fixtures.imported_marker", None)
    overrides = [*MODEL, "model._target_=tests.fixtures.imported_marker.MarkedNet"]
    result = runner.invoke(app, ["config", "show", "conf=gpt2-pipeline", *overrides])
    assert result.exit_code == 0, result.output
    assert "tests.fixtures.imported_marker" not in sys.modules


def test_recipes_validate_does_not_import_the_model_module(tmp_path: Path) -> None:
    sys.modules.pop("tests.fixtures.imported_marker", None)
    recipe = tmp_path / "team.yaml"
    recipe.write_text(
        "defaults:\n  - gpt2-pipeline\n  - override /data: synthetic\n  - _self_\n"
        "model:\n  family: custom\n  _target_: tests.fixtures.imported_marker.MarkedNet\n"
        "  kwargs: {in_features: 4, width: 8, n_classes: 10, depth: 1}\n"
        "  blocks: [inp, out]\n  in_features: 4\nparallel:\n  pp: 1\n"
    )
    result = runner.invoke(app, ["recipes", "validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "tests.fixtures.imported_marker" not in sys.modules
    result = runner.invoke(app, ["plan", f"conf={recipe}"])  # the control: plan builds the model
    assert result.exit_code == 0, result.output
    assert "tests.fixtures.imported_marker" in sys.modules
