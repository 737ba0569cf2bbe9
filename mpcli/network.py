"""Where this node listens: every store and collective bootstrap binds to one chosen address.

torch's TCPStore server listens on every interface whatever host it is given, so torch elastic's
rendezvous store and the store the workers meet at would be open to the whole network. mpcli hosts
both itself on sockets it has bound (TCPStore's master_listen_fd), and points gloo and NCCL at the
interface of the same address: loopback on one node, the address towards the rendezvous host on
several, or `topology.bind_host`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpcli.config.schema import TopologyConfig
from mpcli.errors import ConfigError

if TYPE_CHECKING:
    from torch.distributed import Store, TCPStore
    from torch.distributed.launcher.api import LaunchConfig

LOOPBACK = "127.0.0.1"
C10D_DEFAULT_PORT = 29400  # torch's own default for a c10d rendezvous endpoint without a port


def bind_address(topology: TopologyConfig) -> str:
    """The address every listener of this node binds to: `bind_host` when set; otherwise loopback on
    one node (nothing needs to reach it from elsewhere) or this node's address towards the rendezvous
    host on several."""
    if topology.bind_host:
        try:
            _resolve(topology.bind_host)
        except OSError as exc:
            raise ConfigError(
                f"topology.bind_host={topology.bind_host}: not an address here ({exc})"
            ) from None
        return topology.bind_host
    if topology.nnodes == 1:
        return LOOPBACK
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(topology.rdzv_endpoint, C10D_DEFAULT_PORT)
    try:
        address = routed_address(host, port)
    except OSError as exc:
        raise ConfigError(
            f"topology.rdzv_endpoint={topology.rdzv_endpoint}: no route to {host} ({exc}); "
            "set topology.bind_host to this node's address"
        ) from None
    if ipaddress.ip_address(address).is_loopback and not _is_loopback_host(host):
        warnings.warn(
            f"{host} resolves to loopback ({address}) on this node, so other nodes cannot reach the stores "
            "it hosts; set topology.bind_host to this node's network address",
            stacklevel=2,
        )
    return address


def routed_address(host: str, port: int) -> str:
    """This machine's source address towards `host`: connecting a UDP socket only picks the route."""
    family, kind, proto, _, target = socket.getaddrinfo(
        host, port or C10D_DEFAULT_PORT, type=socket.SOCK_DGRAM
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.connect(target)
        return str(probe.getsockname()[0])


def bound_store(host: str, port: int, **options: Any) -> TCPStore:
    """A TCPStore server listening on `host` only (port 0: a free one, see `.port`)."""
    from torch.distributed import TCPStore

    if "master_listen_fd" not in (TCPStore.__init__.__doc__ or ""):
        warnings.warn(
            "this torch's TCPStore cannot be handed a socket: it listens on every interface", stacklevel=2
        )
        return TCPStore(host, port, is_master=True, **options)
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        # A fixed port (the rendezvous endpoint's) may still be in TIME_WAIT after the previous run.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and _is_wildcard(host):
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" covers IPv4 too
        listener.bind(address)
    except OSError:
        listener.close()
        raise
    # The store listens on the socket and closes it when it is destroyed.
    bound_port = listener.getsockname()[1]
    return TCPStore(host, bound_port, is_master=True, master_listen_fd=listener.detach(), **options)


def worker_environment(address: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for the workers, where the user has not set them.

    gloo binds to the interface it is given (else to whatever the hostname resolves to). NCCL's
    bootstrap does too, but NCCL_SOCKET_IFNAME also picks NCCL's socket transport between nodes,
    which is NCCL's (or the user's) choice: mpcli sets it only to keep a node to itself on loopback."""
    environ = os.environ if environ is None else environ
    interface = None if _is_wildcard(address) else interface_of(address)
    if interface is None:
        return {}
    wanted = {"GLOO_SOCKET_IFNAME": interface}
    if ipaddress.ip_address(_resolve(address)).is_loopback:
        wanted["NCCL_SOCKET_IFNAME"] = interface
    return {key: value for key, value in wanted.items() if not environ.get(key)}


def interface_of(address: str) -> str | None:
    """The name of the network interface that holds `address` (Linux), or None."""
    ip = ipaddress.ip_address(_resolve(address))
    if ip.is_loopback:
        names = [name for _, name in socket.if_nameindex()]
        return next((name for name in ("lo", "lo0") if name in names), None)
    if ip.version == 6:
        return _ipv6_interface(ip)
    import fcntl
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                reply = fcntl.ioctl(probe.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:  # an interface without an IPv4 address
                continue
            if socket.inet_ntoa(reply[20:24]) == str(ip):
                return name
    return None


def _ipv6_interface(ip: ipaddress.IPv6Address) -> str | None:
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and ipaddress.IPv6Address(bytes.fromhex(fields[0])) == ip:
            return fields[5]
    return None


def _resolve(host: str) -> str:
    return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextmanager
def own_rendezvous_store(config: LaunchConfig, address: str) -> Iterator[LaunchConfig]:
    """On the node that hosts the rendezvous, host its store here, bound to `address`, and let torch
    elastic join it as a client; every node advertises `address` to the workers as MASTER_ADDR."""
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    local_addr = config.local_addr if _is_wildcard(address) else address
    if not config.rdzv_configs.get("is_host"):
        yield dataclasses.replace(config, local_addr=local_addr)
        return
    host, port = parse_rendezvous_endpoint(config.rdzv_endpoint, C10D_DEFAULT_PORT)
    store = bound_store(address, port, multi_tenant=True)
    reach = host if _is_wildcard(address) else address
    try:
        yield dataclasses.replace(
            config,
            rdzv_endpoint=f"[{reach}]:{store.port}" if ":" in reach else f"{reach}:{store.port}",
            rdzv_configs={**config.rdzv_configs, "is_host": False},
            local_addr=local_addr,
        )
    finally:
        del store  # closes the listener now, even while a traceback still holds this frame


def process_group_store(
    topology: TopologyConfig, rank: int, world_size: int, timeout: timedelta
) -> Store | None:
    """The store of init_process_group, hosted by rank 0 on this node's bind address; None when the
    agent hosts it (then torch's env:// only connects)."""
    from torch.distributed import PrefixStore, TCPStore

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return None
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    options: dict[str, Any] = {"world_size": world_size, "timeout": timeout, "multi_tenant": True}
    if rank == 0:
        store = bound_store(bind_address(topology), port, **options)
    else:
        store = TCPStore(host, port, is_master=False, **options)
    return PrefixStore("default_pg", store)  # the key space torch's env:// would give it
