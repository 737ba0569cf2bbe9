"""A single-node run listens on loopback only: the rendezvous store, the workers' store, gloo."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mpcli.config.schema import RunConfig
from mpcli.launch import launch
from mpcli.topology import ParallelDims
from tests.conftest import tiny_run

pytestmark = pytest.mark.dist

LAUNCHER_PID = "launcher.pid"
LISTEN = "0A"  # TCP state code of a listening socket in /proc/net/tcp*
INTERFACE_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _address(hex_address: str) -> str:
    """/proc/net/tcp* write addresses as 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_addresses(pids: list[int]) -> dict[int, list[str]]:
    """{pid: [address:port of each listening TCP socket (IPv4 and IPv6) that pid holds]}."""
    by_inode: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                host, port = fields[1].split(":")
                by_inode[fields[9]] = f"{_address(host)}:{int(port, 16)}"
    return {pid: sorted(by_inode[i] for i in _socket_inodes(pid) if i in by_inode) for pid in pids}


def report_listeners(
    run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path
) -> dict[str, object] | None:
    """Rank 0 lists the listeners of the launcher and of every worker while all of them are alive."""
    pids: list[int] = [0] * dist.get_world_size()
    dist.all_gather_object(pids, os.getpid())
    result = None
    if dist.get_rank() == 0:
        launcher = int((run_dir / LAUNCHER_PID).read_text())
        result = {
            "launcher": launcher,
            "workers": pids,
            "listeners": listening_addresses([launcher, *pids]),
            "env": {name: os.environ.get(name) for name in INTERFACE_VARS},
        }
    dist.barrier()  # keeps the other workers alive until rank 0 has looked
    return result


def _loopback(listener: str) -> bool:
    return ipaddress.ip_address(listener.rpartition(":")[0]).is_loopback


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL needs a GPU")
        ),
    ],
)
def test_single_node_listens_on_loopback_only(tmp_path: Path, device: str) -> None:
    (tmp_path / LAUNCHER_PID).write_text(str(os.getpid()))
    env_before = dict(os.environ)
    workers = 2 if device == "cpu" else min(2, torch.cuda.device_count())
    run = tiny_run(f"topology.device={device}", f"parallel.pp={workers}")
    report = launch(run, tmp_path, task=report_listeners)[0]
    listeners: dict[int, list[str]] = report["listeners"]
    # Something must have been seen in every process, or the check below proves nothing.
    assert all(listeners[pid] for pid in [report["launcher"], *report["workers"]]), listeners
    exposed = {pid: [a for a in found if not _loopback(a)] for pid, found in listeners.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
    # gloo binds to GLOO_SOCKET_IFNAME's interface, NCCL's bootstrap to NCCL_SOCKET_IFNAME's; a user's
    # own setting wins.
    for name in INTERFACE_VARS:
        assert report["env"][name] == os.environ.get(name, "lo")
    assert dict(os.environ) == env_before  # what the workers were given stays with them
