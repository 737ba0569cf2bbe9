from __future__ import annotations

import importlib.util
import os
import random
import shutil
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpcli.config.compose import compose
from mpcli.config.schema import RunConfig
from tests import process_state

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


# --- hermetic sessions -------------------------------------------------------------------------------
# Every session compiles with empty Inductor/Triton caches and keeps its temporary files in one scratch
# folder that is removed at the end: a green run here means green on a machine that never ran the suite,
# and nothing is left in the temp directory. MPCLI_KEEP_TEST_TMP=1 keeps the folder for debugging.
_SESSION_ENV = ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_SCRATCH = pytest.StashKey[tuple[Path, dict[str, str | None], str | None]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle",
        metavar="SEED",
        default=None,
        help="Run test files, and the tests inside each file, in an order shuffled by SEED "
        "('random' picks one and prints it).",
    )


def pytest_configure(config: pytest.Config) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="mpcli-tests-"))
    config.stash[_SCRATCH] = (scratch, {k: os.environ.get(k) for k in _SESSION_ENV}, tempfile.tempdir)
    os.environ["TMPDIR"] = str(scratch)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(scratch / "triton")
    tempfile.tempdir = str(scratch)
    seed = config.getoption("--shuffle")
    if seed == "random":
        config.option.shuffle = str(random.SystemRandom().randrange(2**32))


def pytest_unconfigure(config: pytest.Config) -> None:
    scratch, env, tempdir = config.stash[_SCRATCH]
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = tempdir
    if os.environ.get("MPCLI_KEEP_TEST_TMP") != "1":
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    scratch = config.stash[_SCRATCH][0]
    lines = [f"scratch (temp files, compile caches): {scratch}"]
    if config.getoption("--shuffle") is not None:
        lines.append(f"shuffled order: --shuffle={config.getoption('--shuffle')}")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle")
    if seed is None:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:  # shown under -q too, unlike the report header
        reporter.write_line(f"shuffled order: --shuffle={seed}")
    rng = random.Random(seed)
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    files = list(by_file)
    rng.shuffle(files)
    shuffled = []
    for path in files:
        group = by_file[path]
        rng.shuffle(group)
        shuffled += group
    items[:] = shuffled


@pytest.fixture(autouse=True)
def _no_leaked_process_state() -> Iterator[None]:
    """Fail a test that leaves compiler config, environment, dtype or logging changed; restore RNGs."""
    before = process_state.snapshot()
    with process_state.rng_restored():
        yield
    leaked = process_state.differences(before, process_state.snapshot())
    if leaked:
        pytest.fail("test left process-wide state changed: " + "; ".join(leaked), pytrace=False)
