"""What mpcli hands torch elastic: one worker per local rank, c10d rendezvous, NUMA pinning if asked."""

from __future__ import annotations

from torch.numa.binding import AffinityMode

from mpcli.launch import launch_config
from tests.conftest import tiny_run


def test_one_worker_per_local_rank_without_pinning_by_default() -> None:
    config = launch_config(tiny_run("parallel.pp=2", "parallel.dp=2"))
    assert config.nproc_per_node == 4 and (config.min_nodes, config.max_nodes) == (1, 1)
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "127.0.0.1:0"
    assert config.numa_options is None


def test_numa_binding_becomes_torchs_affinity_mode() -> None:
    for mode, affinity in (("node", AffinityMode.NODE), ("core-complex", AffinityMode.CORE_COMPLEX)):
        config = launch_config(tiny_run(f"topology.numa_binding={mode}"))
        assert config.numa_options is not None and config.numa_options.affinity_mode == affinity


def test_two_nodes_split_the_workers() -> None:
    run = tiny_run("parallel.pp=2", "parallel.dp=2", "topology.nnodes=2", "topology.rdzv_endpoint=n0:29500")
    config = launch_config(run)
    assert config.nproc_per_node == 2 and config.rdzv_endpoint == "n0:29500"
    assert config.local_addr is None  # each node reports its own address
