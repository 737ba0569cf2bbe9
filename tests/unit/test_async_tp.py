"""Async TP's switch: it marks the tp group for symmetric memory and turns on Inductor's pass.

The pass itself rewrites only CUDA graphs (it skips torch builds without NCCL); bench/one_rank.py
counts its fused ops on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch.distributed._symmetric_memory import is_symm_mem_enabled_for_group
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore

from mpcli.parallel.tensor import enable_async_tp


@pytest.fixture
def fake_world() -> Iterator[None]:
    """Two ranks under torch's fake process group (this process is rank 0).

    Inductor's switch is restored by its own scoped patch: pytest's monkeypatch deletes and re-sets the
    attribute, which leaves torch's config module reporting the key as missing to every later compile.
    """
    with torch._inductor.config.patch(_micro_pipeline_tp=False):
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
        try:
            yield
        finally:
            dist.destroy_process_group()


def test_enable_async_tp_marks_the_tp_group(fake_world: None) -> None:
    tp_mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("tp",))
    group_name = tp_mesh.get_group().group_name
    assert not is_symm_mem_enabled_for_group(group_name)
    enable_async_tp(tp_mesh)
    assert is_symm_mem_enabled_for_group(group_name)
    assert torch._inductor.config._micro_pipeline_tp
