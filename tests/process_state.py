"""What a test may not leave changed in the pytest process: compiler config, environment, default
dtype, matmul precision, thread count and logging setup. A test that changes one of them passes or
fails the tests after it depending on order and on warm caches, so the guard fails the leaking test.

The global RNGs are different: many tests seed them, so the guard restores them after every test.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

# pytest installs and removes its own capture handlers around every phase of a test, and names the
# running test and phase in the environment.
_PYTEST_HANDLER_MODULES = ("_pytest.",)
_PYTEST_ENV = "PYTEST_CURRENT_TEST"
# What torch sets up once, lazily, on the first compile of the process (whichever test that is): an
# environment variable for Inductor's compile workers and the level of its structured-trace logger.
_TORCH_LAZY_ENV_PREFIX = "_TORCHINDUCTOR_"
_TORCH_LAZY_LOGGERS = ("torch.__trace",)


def _config_copies() -> dict[str, dict[str, Any]]:
    import torch._dynamo.config as dynamo
    import torch._functorch.config as functorch
    import torch._inductor.config as inductor

    return {
        "torch._inductor.config": inductor.get_config_copy(),
        "torch._dynamo.config": dynamo.get_config_copy(),
        "torch._functorch.config": functorch.get_config_copy(),
    }


def _own_handlers(logger: logging.Logger) -> tuple[int, ...]:
    return tuple(id(h) for h in logger.handlers if not type(h).__module__.startswith(_PYTEST_HANDLER_MODULES))


def _logging_state() -> dict[str, Any]:
    """Level, propagation and handlers of every logger (the root as "<root>")."""
    loggers = {"<root>": logging.getLogger()}
    loggers |= {
        name: logger
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    return {
        name: (logger.level, logger.propagate, logger.disabled, _own_handlers(logger))
        for name, logger in loggers.items()
        if name not in _TORCH_LAZY_LOGGERS
    }


def _ignored_env(key: str) -> bool:
    return key == _PYTEST_ENV or key.startswith(_TORCH_LAZY_ENV_PREFIX)


def snapshot() -> dict[str, Any]:
    return {
        **_config_copies(),
        "os.environ": {
            k: v
            for k, v in os.environ.items()
            if k != _PYTEST_ENV and not k.startswith(_TORCH_LAZY_ENV_PREFIX)
        },
        "torch default dtype": torch.get_default_dtype(),
        "torch float32 matmul precision": torch.get_float32_matmul_precision(),
        "torch threads": torch.get_num_threads(),
        "logging": _logging_state(),
    }


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per changed item: 'os.environ: FOO', 'torch default dtype: float32 -> float64'."""
    changed = []
    for what, old in before.items():
        new = after[what]
        if what == "logging":  # a module imported during the test may set up its own new loggers
            new = {name: state for name, state in new.items() if name in old}
        if old == new:
            continue
        if isinstance(old, dict):
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            changed.append(f"{what}: {', '.join(map(str, keys[:8]))}")
        else:
            changed.append(f"{what}: {old} -> {new}")
    return changed


@contextmanager
def rng_restored() -> Iterator[None]:
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
