"""Knowledge about a model family lives in its module's `FamilySpec`: nothing else tests its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mpcli.config.compose import compose
from mpcli.parallel.pipeline import compiles_loss, loss_parallel_enabled

PACKAGE = Path(__file__).parents[2] / "mpcli"
FAMILY_NAMES = ("gpt2", "llama", "mlp", "cnn", "custom")


def test_no_module_outside_models_names_a_family() -> None:
    """A newcomer adds a family by touching its own module, its YAML and the registry line."""
    quoted = re.compile("[\"']({})[\"']".format("|".join(FAMILY_NAMES)))
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if "models" not in path.relative_to(PACKAGE).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if quoted.search(line) and not line.strip().startswith("family: str =")  # the schema's default
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("model", "tp", "sharded"),
    [("gpt2-tiny", 2, True), ("llama-tiny", 2, True), ("gpt2-tiny", 1, False), ("mlp-small", 2, False)],
)
def test_loss_parallel_is_decided_once(model: str, tp: int, sharded: bool) -> None:
    data = ["data=synthetic"] if model.startswith("mlp") else []
    run = compose("gpt2-pipeline", [f"model={model}", f"parallel.tp={tp}", "parallel.pp=1", *data])
    assert loss_parallel_enabled(run.parallel, run.model) is sharded
    # A family without a vocabulary head (the MLP) keeps its loss compiled under tp=2.
    assert compiles_loss(True, run.parallel, run.model) is not sharded
