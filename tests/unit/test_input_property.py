"""Property: whatever a user types or a recipe holds, compose + validate end in a config or in one
`ConfigError` line, never in another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpcli.config.compose import _schema_keys, compose
from mpcli.config.validate import validate
from mpcli.errors import ConfigError

KEYS = _schema_keys()
GROUPS = ["model", "parallel", "topology", "train", "data", "checkpoint"]
VALUE_CHARS = "abz019 -_.,:/=+~'\"[]{}()$\\@!*?#%&|<>\t"
values = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["null", "true", "false", "auto", "[]", "{}", "''", "${train.steps}", "${oc.env:HOME}"]),
    st.text(VALUE_CHARS, max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS + GROUPS), st.text("abcdeglmnoprstu._", max_size=14))
overrides = st.one_of(
    st.builds(
        lambda prefix, key, value: f"{prefix}{key}={value}", st.sampled_from(["", "+", "++"]), keys, values
    ),
    st.builds(lambda key: f"~{key}", keys),
    st.text(VALUE_CHARS + "abcdeglmnoprstu", max_size=16),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(VALUE_CHARS, max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS + GROUPS + ["defaults"]), inner, max_size=3),
    ),
    max_leaves=8,
)
recipe_texts = st.one_of(
    documents.map(lambda doc: yaml.safe_dump({"defaults": ["config", "_self_"], "doc": doc})),
    st.dictionaries(
        st.sampled_from(GROUPS),
        st.dictionaries(st.sampled_from([k.split(".")[-1] for k in KEYS]), scalars, max_size=3),
        max_size=3,
    ).map(lambda doc: yaml.safe_dump({"defaults": ["config", "_self_"], **doc})),
    documents.map(yaml.safe_dump),
    st.text(VALUE_CHARS + "abcdegnlmt\n", max_size=40),
)


def compose_and_validate(conf: str, args: list[str]) -> None:
    try:
        validate(compose(conf, args), cuda_devices=0)
    except ConfigError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(str(exc))


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(overrides, max_size=3))
def test_random_overrides_end_in_a_config_or_one_line(args: list[str]) -> None:
    compose_and_validate("gpt2-pipeline", args)


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recipes")


@settings(
    max_examples=100,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=recipe_texts)
def test_random_recipe_files_end_in_a_config_or_one_line(text: str, recipe_dir: Path) -> None:
    recipe = recipe_dir / "random-recipe.yaml"
    recipe.write_text(text)
    compose_and_validate(str(recipe), [])
