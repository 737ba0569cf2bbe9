"""A real (DCP) checkpoint of a one-process model, written without a process group, for the tests
that need a checkpoint but no workers."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from mpcli.checkpoint import store
from mpcli.checkpoint.store import CheckpointMeta, Layout
from mpcli.config.schema import ModelConfig
from mpcli.models import build_model, materialize
from mpcli.models.base import StagedModel

CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=16, vocab=256)


def tiny_model(seed: int = 0, cfg: ModelConfig = CFG) -> StagedModel:
    model = build_model(cfg)
    materialize(model, torch.device("cpu"), seed)
    return model


def write_checkpoint(model: StagedModel, root: Path, step: int) -> Path:
    """Save `model` as mpcli does (tied copy once, an optimizer tensor) and commit it under `root`."""
    state = {store.MODEL + k: v for k, v in model.state_dict().items() if model.init_key(k) == k}
    first = next(iter(state))
    state[store.OPTIM + first.removeprefix(store.MODEL) + ".momentum_buffer"] = torch.zeros_like(state[first])
    partial = root / (store.step_name(step) + store.PARTIAL)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(partial), no_dist=True)
    layout = Layout(pp=1, dp=1, tp=1, schedule="1f1b", virtual_stages=1, world_size=1)
    meta = CheckpointMeta(
        step=step, samples=8 * step, tokens=128 * step, layout=layout, model=asdict(model.cfg)
    )
    return store.commit(partial, meta)
