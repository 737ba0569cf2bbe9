"""What `topology=slurm` reads from a SLURM allocation (conf/topology/slurm.yaml interpolates it).

One `mpcli train` per node (`srun --ntasks-per-node=1`); each starts its node's workers, and the nodes
meet at a c10d rendezvous on the allocation's first host. SLURM writes node lists compressed
("gpu[01-04,07],cpu3"); the first host is the first name of the first entry.
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf

RESOLVER = "mpcli.first_host"
# One entry of a node list: a prefix, then optionally a bracketed range list ("gpu[01-04,07]").
_ENTRY = re.compile(r"([^,\[]+)(?:\[([^\]]+)\])?")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list, e.g. "gpu[007-009],cpu1" -> "gpu007" (padding kept)."""
    match = _ENTRY.match(nodelist.strip())
    if not match or not match.group(1).strip():
        raise ValueError(f"cannot read a host name from the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def register_resolver() -> None:
    """`${mpcli.first_host:${oc.env:SLURM_JOB_NODELIST}}` in config files."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, first_host)
