"""Worker failures end the whole run quickly, name the rank and its log, and leave no process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mpcli.launch import WorkerFailure, launch
from tests.conftest import tiny_run
from tests.dist.tasks import fail_on_rank_1, write_pid

pytestmark = pytest.mark.dist


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_exception_names_rank_error_and_log(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(WorkerFailure) as info:
        launch(tiny_run("parallel.pp=2"), tmp_path, task=fail_on_rank_1)
    assert time.monotonic() - start < 30  # rank 0 sat in a barrier: it was stopped, not waited for
    failure = info.value
    assert failure.rank == 1
    assert "injected failure on purpose" in failure.error
    assert failure.log == tmp_path / "logs" / "rank_1.log"
    assert "RuntimeError: injected failure on purpose" in failure.log.read_text()
    assert "rank 1 failed" in str(failure) and str(failure.log) in str(failure)


def test_kill_9_stops_every_worker(tmp_path: Path) -> None:
    with pytest.raises(WorkerFailure) as info:
        launch(tiny_run("parallel.pp=2"), tmp_path, task=write_pid)
    assert info.value.rank == 1
    assert "SIGKILL" in info.value.error
    pids = [int((tmp_path / f"pid.{rank}").read_text()) for rank in range(2)]
    assert not any(_alive(pid) for pid in pids)
