"""Consolidated weights: export a checkpoint's model to safetensors, and start training from a file.

`model.init_from=FILE.safetensors` reads either mpcli's own names (what `mpcli checkpoint export`
writes: the full model's parameter names, a tied head stored once as `wte.weight`) or a family's
Hugging Face layout, recognised and mapped by that family's `FamilySpec.hf` (models/<family>.py).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from mpcli.checkpoint import store
from mpcli.checkpoint.hf import open_weights, write_hf
from mpcli.checkpoint.safe_metadata import SafeReader
from mpcli.checkpoint.store import MODEL, TensorInfo
from mpcli.config.schema import ModelConfig
from mpcli.errors import ConfigError
from mpcli.models import FAMILIES, build_model
from mpcli.models.base import StagedModel, Transform, keep


def check_shapes(saved: dict[str, TensorInfo], wanted: dict[str, torch.Tensor], *, source: str) -> None:
    """One line naming the first tensor that the checkpoint lacks or holds in another shape."""
    for key, tensor in wanted.items():
        if key not in saved:
            raise ConfigError(
                f"{source}: has no tensor {key} (saved from another model family, size or optimizer?)"
            )
        if saved[key].shape != tuple(tensor.shape):
            raise ConfigError(
                f"{source}: tensor {key} has shape {list(saved[key].shape)} there but "
                f"{list(tensor.shape)} in this model"
            )


def model_tensors(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The whole model's tensors (meta device) under their checkpoint names, tied copies left out."""
    model = build_model(cfg)
    return {MODEL + k: v for k, v in model.state_dict().items() if model.init_key(k) == k}


def check_checkpoint(path: Path, cfg: ModelConfig, *, source: str) -> None:
    """Before launch: `path` holds a model of this shape."""
    check_shapes(store.tensors(path), model_tensors(cfg), source=source)


def _sources(keys: Iterable[str], names: Iterable[str], cfg: ModelConfig) -> dict[str, tuple[str, Transform]]:
    """mpcli name -> (file key, transform), for mpcli's own names or a family's Hugging Face layout."""
    keys = list(keys)
    for spec in FAMILIES.values():
        hf = spec.hf and next((m for k in keys if (m := spec.hf.marker.fullmatch(k))), None)
        if not hf:
            continue
        if spec.name != cfg.family:
            needs = f"needs model.family={spec.name}"
            raise ConfigError(f"model.init_from: a Hugging Face {spec.name} file {needs}")
        return {name: spec.hf.source(name, cfg, hf.group(1) or "") for name in names}
    return {name: (name, keep) for name in names}


def _checked_sources(
    handle: object, wanted: dict[str, torch.Tensor], cfg: ModelConfig, path: str
) -> dict[str, tuple[str, Transform]]:
    """Map and check every wanted tensor against the file's header (shapes only, nothing read)."""
    keys = set(handle.keys())  # type: ignore[attr-defined]
    sources = _sources(keys, wanted, cfg)
    for name, (key, transform) in sources.items():
        where = key if key == name else f"{key} (for {name})"
        if key not in keys:
            raise ConfigError(f"model.init_from={path}: has no tensor {where}")
        shape = handle.get_slice(key).get_shape()  # type: ignore[attr-defined]
        mapped = tuple(transform(torch.empty(shape, device="meta")).shape)
        if mapped != tuple(wanted[name].shape):
            raise ConfigError(
                f"model.init_from={path}: tensor {where} has shape {list(shape)}, "
                f"which does not give this model's {list(wanted[name].shape)}"
            )
    return sources


def check_init_from(cfg: ModelConfig) -> None:
    """Before launch: the file (or Hugging Face directory) exists and holds every tensor of the model
    in a usable shape."""
    path = str(cfg.init_from)
    if not Path(path).expanduser().exists():
        raise ConfigError(f"model.init_from={path}: file not found")
    wanted = {k.removeprefix(MODEL): v for k, v in model_tensors(cfg).items()}
    with open_weights(Path(path).expanduser(), f"model.init_from={path}") as handle:
        _checked_sources(handle, wanted, cfg, path)


def load_weights(parts: list[StagedModel], path: str, cfg: ModelConfig) -> None:
    """Copy weights from a safetensors file into this rank's stages, whatever their sharding."""
    stages = nn.ModuleDict({str(i): part for i, part in enumerate(parts)})
    local = get_model_state_dict(stages)  # '<stage>.<name>' -> tensor or DTensor (global shape)
    names = {fqn: parts[int(fqn.partition(".")[0])].init_key(fqn.partition(".")[2]) for fqn in local}
    wanted = {names[fqn]: tensor for fqn, tensor in local.items()}
    full: dict[str, torch.Tensor] = {}
    with open_weights(Path(path).expanduser(), f"model.init_from={path}") as handle:
        sources = _checked_sources(handle, wanted, cfg, path)
        for fqn, tensor in local.items():
            key, transform = sources[names[fqn]]
            full[fqn] = transform(handle.get_tensor(key)).to(tensor.dtype).contiguous()
    set_model_state_dict(stages, full, options=StateDictOptions(full_state_dict=True))


# ---- export -----------------------------------------------------------------------------------------


def read_model(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights as full tensors, in this process (no process group needed)."""
    infos = store.tensors(path, MODEL)
    state = {MODEL + name: torch.empty(info.shape, dtype=info.dtype) for name, info in infos.items()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=SafeReader(path), no_dist=True)
    return {key.removeprefix(MODEL): value for key, value in state.items()}


def export(path: Path, out: Path, *, bf16: bool = False, hf: bool = False) -> dict[str, torch.Tensor]:
    """Write the model of checkpoint `path` (or a run's latest) to one safetensors file, or (`hf`) to a
    Hugging Face model directory that transformers loads."""
    checkpoint = store.resolve(path)
    if checkpoint is None:
        raise ConfigError(f"{path}: no complete checkpoint there")
    weights = read_model(checkpoint)
    if bf16:
        weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()}
    meta = store.read_meta(checkpoint)
    if hf:
        return write_hf(weights, ModelConfig(**meta.model), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": "pt", "mpcli.model": json.dumps(meta.model), "mpcli.step": str(meta.step)}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out), metadata=info)
    return weights
