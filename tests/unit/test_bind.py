"""Where a node's listeners bind: loopback on one node, the routed address on several, bind_host if set."""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta

import pytest
from torch.distributed import TCPStore
from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint
from torch.distributed.launcher.api import LaunchConfig

import mpcli.launch as launch_module
import mpcli.network as network
from mpcli.config.schema import TopologyConfig
from mpcli.errors import ConfigError
from mpcli.launch import launch_config
from mpcli.network import bind_address, bound_store, interface_of, worker_environment
from tests.conftest import tiny_run
from tests.dist.test_listeners import listening_addresses

ELSEWHERE = "203.0.113.7"  # a documentation address: a route to it is looked up, nothing is sent


def _routed_elsewhere() -> str:
    try:
        return network.routed_address(ELSEWHERE, 29400)
    except OSError:
        pytest.skip("this machine has no route off loopback")


def _is_local(address: str) -> bool:
    """Only an address of this machine can be bound."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def test_one_node_binds_loopback() -> None:
    assert bind_address(TopologyConfig()) == "127.0.0.1"


def test_explicit_bind_host_wins() -> None:
    assert bind_address(TopologyConfig(bind_host="10.1.2.3")) == "10.1.2.3"
    # The endpoint's host is not even looked up.
    several = TopologyConfig(nnodes=2, rdzv_endpoint="n0.invalid:29400", bind_host="::")
    assert bind_address(several) == "::"


def test_several_nodes_bind_the_address_that_reaches_the_endpoint() -> None:
    assert bind_address(TopologyConfig(nnodes=2, rdzv_endpoint="127.0.0.1:29400")) == "127.0.0.1"
    address = bind_address(TopologyConfig(nnodes=2, rdzv_endpoint=f"{ELSEWHERE}:29400"))
    assert address == _routed_elsewhere()
    assert not ipaddress.ip_address(address).is_loopback and _is_local(address)
    # The node that hosts the rendezvous reaches itself through its own address.
    assert bind_address(TopologyConfig(nnodes=2, rdzv_endpoint=f"{address}:29400")) == address


def test_ipv6_endpoint() -> None:
    if not socket.has_ipv6 or not _is_local("::1"):
        pytest.skip("no IPv6 loopback")
    assert bind_address(TopologyConfig(nnodes=2, rdzv_endpoint="[::1]:29400")) == "::1"


def test_unresolvable_endpoint_asks_for_bind_host() -> None:
    with pytest.raises(ConfigError, match="topology.bind_host"):
        bind_address(TopologyConfig(nnodes=2, rdzv_endpoint="n0.invalid:29400"))


def test_unresolvable_bind_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="topology.bind_host=n1.invalid"):
        bind_address(TopologyConfig(bind_host="n1.invalid"))


def test_endpoint_name_on_loopback_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc/hosts often maps a machine's own name to 127.0.1.1: other nodes could not reach it there."""
    monkeypatch.setattr(network, "routed_address", lambda host, port: "127.0.1.1")
    with pytest.warns(UserWarning, match="bind_host"):
        assert bind_address(TopologyConfig(nnodes=2, rdzv_endpoint="n0:29400")) == "127.0.1.1"


def test_bound_store_listens_on_its_host_only() -> None:
    store = bound_store("127.0.0.1", 0, multi_tenant=True)
    client = TCPStore("127.0.0.1", store.port, is_master=False, timeout=timedelta(seconds=10))
    client.set("key", "value")
    assert store.get("key") == b"value"
    assert listening_addresses([os.getpid()])[os.getpid()] == [f"127.0.0.1:{store.port}"]
    del client, store
    assert listening_addresses([os.getpid()])[os.getpid()] == []  # the store closed its socket


def test_workers_get_loopback_interfaces_unless_the_user_chose() -> None:
    assert interface_of("127.0.0.1") == "lo"
    both = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
    assert worker_environment("127.0.0.1", {}) == both
    assert worker_environment("127.0.0.1", {"NCCL_SOCKET_IFNAME": "ib0"}) == {"GLOO_SOCKET_IFNAME": "lo"}
    assert worker_environment("0.0.0.0", {}) == {}


def test_several_nodes_leave_nccls_interface_to_nccl() -> None:
    address = _routed_elsewhere()
    interface = interface_of(address)
    assert interface is not None and interface != "lo"
    assert worker_environment(address, {}) == {"GLOO_SOCKET_IFNAME": interface}


def test_the_launcher_hosts_the_rendezvous_store_and_torch_joins_it() -> None:
    config = launch_config(tiny_run())
    with network.own_rendezvous_store(config, "127.0.0.1") as joined:
        assert isinstance(joined, LaunchConfig)
        host, port = parse_rendezvous_endpoint(joined.rdzv_endpoint, default_port=-1)
        assert host == "127.0.0.1" and port > 0 and joined.rdzv_configs["is_host"] is False
        assert listening_addresses([os.getpid()])[os.getpid()] == [joined.rdzv_endpoint]
    assert listening_addresses([os.getpid()])[os.getpid()] == []


def test_a_joining_node_advertises_its_bind_address() -> None:
    run = tiny_run(
        "parallel.pp=2", "topology.nnodes=2", "topology.node_rank=1", "topology.rdzv_endpoint=n0:29400"
    )
    with network.own_rendezvous_store(launch_config(run), "10.1.2.3") as joined:
        assert joined.rdzv_endpoint == "n0:29400" and joined.local_addr == "10.1.2.3"


def test_environment_is_restored() -> None:
    before = dict(os.environ)
    with launch_module._scoped_environ({"GLOO_SOCKET_IFNAME": "lo"}):
        assert os.environ["GLOO_SOCKET_IFNAME"] == "lo"
        os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGTERM"  # as torch elastic does
    assert dict(os.environ) == before
