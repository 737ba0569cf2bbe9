"""A gloo process group of one inside the test process, and a small token file: enough to run the real
training loop and checkpointer without spawning workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch.distributed as dist


@contextmanager
def process_group_of_one() -> Iterator[None]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def token_file(path: Path) -> Path:
    """Tokens of this file's own text (learnable), opened instantly unlike the byte corpus."""
    text = np.frombuffer(Path(__file__).read_bytes(), dtype=np.uint8)
    np.resize(text, 20_000).astype(np.uint16).tofile(path)
    return path
