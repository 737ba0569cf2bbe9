"""Start one worker per device through torch elastic, and the worker's entry point.

The launcher process owns the terminal; each worker writes its stdout/stderr to
run_dir/logs/rank_<N>.log and global rank 0 writes run_dir/metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpcli.config.compose import from_yaml, to_yaml
from mpcli.config.schema import RunConfig
from mpcli.config.validate import resolve_device
from mpcli.network import bind_address, own_rendezvous_store, process_group_store, worker_environment

if TYPE_CHECKING:
    from torch.distributed.launcher.api import LaunchConfig

RESOLVED_CONFIG = "config.yaml"
ELASTIC_SCRATCH = ".elastic"


def rank_log(run_dir: Path, rank: int) -> Path:
    return run_dir / "logs" / f"rank_{rank}.log"


@dataclass
class WorkerFailure(Exception):
    """A worker died: which rank, what it said, and where its log is."""

    rank: int
    error: str
    log: Path

    def __str__(self) -> str:
        return f"rank {self.rank} failed: {self.error} (log: {self.log})"


def _redirect_output(log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def worker_main(run_dir: str, task: Callable[..., Any] | None = None) -> Any:
    """Entry point of every worker process (spawned by torch elastic)."""
    import torch
    import torch.distributed as dist

    from mpcli.topology import ParallelDims

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    _redirect_output(rank_log(Path(run_dir), rank))
    run = from_yaml((Path(run_dir) / RESOLVED_CONFIG).read_text())
    device_type = resolve_device(run.topology.device, torch.cuda.device_count())
    local_world = int(os.environ["LOCAL_WORLD_SIZE"])
    threads = run.topology.threads_per_worker or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    p = run.parallel
    dims = ParallelDims(pp=p.pp, dp=p.dp, tp=p.tp, device_type=device_type)
    device = dims.device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=run.topology.timeout_s)
    store = process_group_store(run.topology, rank, dims.world_size, timeout)
    explicit = {} if store is None else {"store": store, "rank": rank, "world_size": dims.world_size}
    dist.init_process_group(dims.backend, timeout=timeout, **explicit)
    try:
        print(f"rank {rank}/{dims.world_size} on {device}, {threads} threads, torch {torch.__version__}")
        if task is None:
            from mpcli.train.loop import train

            task = train
        result = task(run, dims=dims, device=device, run_dir=Path(run_dir))
        dist.barrier()
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if dims.backend == "nccl":
        dist.destroy_process_group()
    # gloo: the process ends through os._exit (multiprocessing) once torch elastic has the result;
    # tearing gloo down first was seen to abort the process now and then, after the work was done.
    return result


def launch_config(run: RunConfig) -> LaunchConfig:
    """torch elastic's settings for this node: one worker per local rank, c10d rendezvous."""
    from torch.distributed.launcher.api import LaunchConfig

    topo = run.topology
    world = run.parallel.pp * run.parallel.dp * run.parallel.tp
    numa: dict[str, Any] = {}  # passed only when asked for: older torch elastic has no such field
    if topo.numa_binding:
        from torch.numa.binding import AffinityMode, NumaOptions

        numa["numa_options"] = NumaOptions(affinity_mode=AffinityMode(topo.numa_binding))
    return LaunchConfig(
        min_nodes=topo.nnodes,
        max_nodes=topo.nnodes,
        nproc_per_node=world // topo.nnodes,
        run_id=_rdzv_id(run),
        rdzv_backend="c10d",
        rdzv_endpoint=topo.rdzv_endpoint or "127.0.0.1:0",
        rdzv_configs={"is_host": topo.node_rank == 0, "timeout": 120},
        max_restarts=topo.max_restarts,
        monitor_interval=0.2,
        start_method="spawn",
        local_addr="127.0.0.1" if topo.nnodes == 1 else None,
        **numa,
    )


def launch(run: RunConfig, run_dir: Path, *, task: Callable[..., Any] | None = None) -> dict[int, Any]:
    """Launch this node's workers and wait; returns {global rank: return value of `task`}.

    `task(run, dims=, device=, run_dir=)` defaults to training. Raises `WorkerFailure` naming the first
    failed rank when any worker fails (torch elastic has stopped the others by then).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESOLVED_CONFIG).write_text(to_yaml(run))
    address = bind_address(run.topology)
    # Worker rank 0 hosts the workers' store (bound by `process_group_store`) rather than torch
    # elastic's agent, whose store would listen on every interface and, across restarts, keep keys of the
    # failed attempt where a new process group may read a dead peer's address (pytorch/pytorch#135712).
    environ = {**worker_environment(address), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    try:
        with (
            _elastic_scratch(run_dir) as scratch,
            own_rendezvous_store(_with_logs(launch_config(run), scratch), address) as config,
            _scoped_environ(environ),
        ):
            return elastic_launch(config, worker_main)(str(run_dir), task)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise WorkerFailure(rank, _failure_message(failure), rank_log(run_dir, rank)) from None


@contextmanager
def _elastic_scratch(run_dir: Path) -> Iterator[Path]:
    """A folder of the run for what torch elastic writes beside the workers (per-rank error files, its
    per-attempt folders, torch.multiprocessing's error pickles, made with `tempfile` in this process),
    removed when the launch ends: their contents reach mpcli through torch elastic's `ChildFailedError`,
    and nothing is left in the system's temp directory."""
    scratch = run_dir / ELASTIC_SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    tempdir = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = tempdir
        shutil.rmtree(scratch, ignore_errors=True)


def _with_logs(config: LaunchConfig, scratch: Path) -> LaunchConfig:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs

    return dataclasses.replace(config, logs_specs=DefaultLogsSpecs(log_dir=str(scratch)))


@contextmanager
def _scoped_environ(updates: dict[str, str]) -> Iterator[None]:
    """`updates` in the environment for one launch only (spawned workers inherit it); torch elastic's
    own TORCHELASTIC_SIGNALS_TO_HANDLE, written into this process's environment, goes too."""
    keys = [*updates, "TORCHELASTIC_SIGNALS_TO_HANDLE"]
    before = {key: os.environ.get(key) for key in keys}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _rdzv_id(run: RunConfig) -> str:
    """Every node of a job must present the same id; a single node takes a fresh one per run."""
    if run.topology.rdzv_id:
        return run.topology.rdzv_id
    return f"mpcli-{run.name}" if run.topology.nnodes > 1 else uuid.uuid4().hex[:12]


def _failure_message(failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    text = str(message).strip()
    if not text or text.startswith("To enable traceback"):
        return f"exit code {failure.exitcode}" + (
            f" (signal {failure.signal_name()})" if failure.exitcode < 0 else ""
        )
    return text.splitlines()[0] if "\n" in text else text
