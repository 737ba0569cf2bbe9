"""topology=slurm: the node count, node index, job id and first host come from srun's environment."""

from __future__ import annotations

import pytest

from mpcli.config.compose import compose
from mpcli.config.slurm import first_host
from mpcli.errors import ConfigError

# What srun sets on the fourth node of a 4-node allocation.
SRUN_ENV = {
    "SLURM_NNODES": "4",
    "SLURM_NODEID": "3",
    "SLURM_JOB_ID": "918",
    "SLURM_JOB_NODELIST": "gpu[07-10]",
}


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("node1", "node1"), ("gpu[007-009],cpu1", "gpu007"), ("a1,b2", "a1"), ("rack1-n[3,5-7]", "rack1-n3"),
     ("10.0.0.5", "10.0.0.5")],
)  # fmt: skip
def test_first_host_of_a_compressed_node_list(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_empty_node_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="node list"):
        first_host("")


def test_slurm_topology_reads_the_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SRUN_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPCLI_RDZV_PORT", raising=False)
    topology = compose("gpt2-pipeline", ["topology=slurm", "parallel.pp=4"]).topology
    assert (topology.nnodes, topology.node_rank) == (4, 3)
    assert topology.rdzv_id == "slurm-918" and topology.rdzv_endpoint == "gpu07:29400"
    monkeypatch.setenv("MPCLI_RDZV_PORT", "31000")
    assert compose("gpt2-pipeline", ["topology=slurm"]).topology.rdzv_endpoint == "gpu07:31000"


def test_slurm_topology_outside_an_allocation_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in SRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError) as excinfo:
        compose("gpt2-pipeline", ["topology=slurm"])
    message = str(excinfo.value)
    assert "\n" not in message and "SLURM_NNODES" in message and "srun" in message
