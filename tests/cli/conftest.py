"""Fixtures of the CLI tests: a user's shell without team recipes, trust settings or GPUs, and a
`launch` that records its calls instead of starting workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mpcli.config.compose import RECIPE_PATH_ENV
from mpcli.config.target import TRUST_ENV


@pytest.fixture
def isolated_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cwd is an empty directory (a run would create runs/ there); no team recipes; no GPUs."""
    monkeypatch.delenv(RECIPE_PATH_ENV, raising=False)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mpcli.cli.common.cuda_device_count", lambda: 0)


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Calls of `launch` by the train command; no worker process is ever started."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr("mpcli.cli.train.launch", lambda *args, **kwargs: calls.append(args))
    return calls
