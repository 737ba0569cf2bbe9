from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

from mpcli.config.compose import compose
from mpcli.config.schema import RunConfig

# A model small enough that a gloo step takes milliseconds, with every feature of the real one.
TINY = [
    "model=gpt2-tiny",
    "model.n_layer=4",
    "model.d_model=32",
    "model.n_head=2",
    "model.seq_len=16",
    "topology.device=cpu",
    "topology.timeout_s=60",
    "topology.threads_per_worker=1",
    "data.corpus_bytes=200000",
]


def tiny_run(*overrides: str) -> RunConfig:
    return compose("gpt2-pipeline", [*TINY, *overrides])


@pytest.fixture
def tiny() -> type:
    return tiny_run


def bench_module(name: str) -> types.ModuleType:
    """A script of bench/ (not a package) loaded as a module, for tests of its functions."""
    path = Path(__file__).parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
