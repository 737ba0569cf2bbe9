"""Collective bandwidth between the GPUs of one machine, at the message sizes training sends.

Usage: python bench/run.py nccl-bandwidth [--gpus N], which starts this file on N GPUs through torchrun.
Prints the NCCL settings in the environment, then one row per collective and size: time per call and
bus bandwidth (NCCL's convention: the link traffic a ring needs, so sizes and ops compare).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

SIZES_MB = (1, 8, 32, 128)


def timed(fn: Callable[[], object], repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _measure(mb: int, world: int) -> list[tuple[str, float, float]]:
    """(collective, seconds per call, bus-bandwidth factor) for a gathered tensor of `mb` MB (bf16)."""
    n = mb * 2**20 // 2
    full = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    shard = torch.empty(n // world, device="cuda", dtype=torch.bfloat16)
    ring = (world - 1) / world
    return [
        ("all_gather", timed(lambda: dist.all_gather_into_tensor(full, shard)), ring),
        ("reduce_scatter", timed(lambda: dist.reduce_scatter_tensor(shard, full)), ring),
        ("all_reduce", timed(lambda: dist.all_reduce(full)), 2 * ring),
    ]


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if rank == 0:
        print({k: v for k, v in os.environ.items() if k.startswith("NCCL")}, torch.__version__)
    for mb in SIZES_MB:
        for name, seconds, factor in _measure(mb, world):
            if rank == 0:
                gbps = factor * mb * 2**20 / seconds / 1e9
                print(f"{name:15s} {mb:4d} MB  {seconds * 1e3:8.3f} ms  {gbps:7.1f} GB/s")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
