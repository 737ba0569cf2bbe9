"""Consolidated weights: export a checkpoint's model to safetensors, and start training from a file.

`model.init_from=FILE.safetensors` reads either mpcli's own names (what `mpcli checkpoint export`
writes: the full model's parameter names, a tied head stored once as `wte.weight`) or GPT-2 in the
Hugging Face layout, mapped like this (`h.<i>` may carry a `transformer.` prefix):

| mpcli                        | Hugging Face GPT-2                     | how                                |
|------------------------------|----------------------------------------|------------------------------------|
| wte.weight (V, D)            | wte.weight (50257, D)                  | rows padded with zeros up to V     |
| wpe.weight (T, D)            | wpe.weight (1024, D)                   | first T rows                       |
| blocks.i.ln_1 / ln_2 .*      | h.i.ln_1 / ln_2 .*                     | as is                              |
| blocks.i.attn.{q,k,v}.weight | h.i.attn.c_attn.weight (D, 3D)         | columns [jD, (j+1)D), transposed   |
| blocks.i.attn.{q,k,v}.bias   | h.i.attn.c_attn.bias (3D)              | entries [jD, (j+1)D)               |
| blocks.i.attn.proj.*         | h.i.attn.c_proj.*                      | weight transposed (Conv1D: in, out)|
| blocks.i.mlp.fc.*            | h.i.mlp.c_fc.*                         | weight transposed                  |
| blocks.i.mlp.proj.*          | h.i.mlp.c_proj.*                       | weight transposed                  |
| ln_f.*                       | ln_f.*                                 | as is                              |
| head.weight (untied only)    | lm_head.weight                         | rows padded like wte               |

Hugging Face's Conv1D computes x @ W + b with W stored (in, out); nn.Linear stores (out, in).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from mpcli.checkpoint import store
from mpcli.checkpoint.safe_metadata import SafeReader
from mpcli.checkpoint.store import MODEL, TensorInfo
from mpcli.config.schema import ModelConfig
from mpcli.errors import ConfigError
from mpcli.models import build_model
from mpcli.models.base import StagedModel

Transform = Callable[[torch.Tensor], torch.Tensor]
HF_MARKER = re.compile(r"(transformer\.)?h\.\d+\.attn\.c_attn\.weight")
HF_CONV1D = {"attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}


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


# ---- Hugging Face GPT-2 ----------------------------------------------------------------------------


def _pad_rows(rows: int) -> Transform:
    def pad(t: torch.Tensor) -> torch.Tensor:
        missing = rows - t.shape[0]
        return torch.cat([t, t.new_zeros(missing, *t.shape[1:])]) if missing > 0 else t

    return pad


def _keep(t: torch.Tensor) -> torch.Tensor:
    return t


def _hf_source(name: str, cfg: ModelConfig, prefix: str) -> tuple[str, Transform]:
    """File key and transform giving mpcli's `name` from a Hugging Face GPT-2 state dict."""
    d = cfg.d_model
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if block:
        index, module, kind = block.groups()
        base = f"{prefix}h.{index}."
        if module in ("attn.q", "attn.k", "attn.v"):
            cols = slice("qkv".index(module[-1]) * d, ("qkv".index(module[-1]) + 1) * d)
            if kind == "weight":
                return base + "attn.c_attn.weight", lambda t: t[:, cols].t()
            return base + "attn.c_attn.bias", lambda t: t[cols]
        if module in HF_CONV1D:
            return f"{base}{HF_CONV1D[module]}.{kind}", (lambda t: t.t()) if kind == "weight" else _keep
        return f"{base}{module}.{kind}", _keep
    if name == "wte.weight":
        return prefix + name, _pad_rows(cfg.vocab)
    if name == "wpe.weight":
        return prefix + name, lambda t: t[: cfg.seq_len]
    if name == "head.weight":
        return "lm_head.weight", _pad_rows(cfg.vocab)
    return prefix + name, _keep


def _sources(keys: Iterable[str], names: Iterable[str], cfg: ModelConfig) -> dict[str, tuple[str, Transform]]:
    """mpcli name -> (file key, transform), for mpcli's own names or the Hugging Face GPT-2 layout."""
    keys = list(keys)
    hf = next((m for k in keys if (m := HF_MARKER.fullmatch(k))), None)
    if hf is None:
        return {name: (name, _keep) for name in names}
    if cfg.family != "gpt2":
        raise ConfigError("model.init_from: a Hugging Face GPT-2 file needs model.family=gpt2")
    prefix = hf.group(1) or ""
    return {name: _hf_source(name, cfg, prefix) for name in names}


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
    """Before launch: the file exists and holds every tensor of the model in a usable shape."""
    path = str(cfg.init_from)
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"model.init_from={path}: file not found")
    wanted = {k.removeprefix(MODEL): v for k, v in model_tensors(cfg).items()}
    with safe_open(str(Path(path).expanduser()), framework="pt") as handle:
        _checked_sources(handle, wanted, cfg, path)


def load_weights(parts: list[StagedModel], path: str, cfg: ModelConfig) -> None:
    """Copy weights from a safetensors file into this rank's stages, whatever their sharding."""
    stages = nn.ModuleDict({str(i): part for i, part in enumerate(parts)})
    local = get_model_state_dict(stages)  # '<stage>.<name>' -> tensor or DTensor (global shape)
    names = {fqn: parts[int(fqn.partition(".")[0])].init_key(fqn.partition(".")[2]) for fqn in local}
    wanted = {names[fqn]: tensor for fqn, tensor in local.items()}
    full: dict[str, torch.Tensor] = {}
    with safe_open(str(Path(path).expanduser()), framework="pt") as handle:
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


def export(path: Path, out: Path, *, bf16: bool = False) -> dict[str, torch.Tensor]:
    """Write the model of checkpoint `path` (or a run's latest) to one safetensors file."""
    checkpoint = store.resolve(path)
    if checkpoint is None:
        raise ConfigError(f"{path}: no complete checkpoint there")
    weights = read_model(checkpoint)
    if bf16:
        weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()}
    meta = store.read_meta(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": "pt", "mpcli.model": json.dumps(meta.model), "mpcli.step": str(meta.step)}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out), metadata=info)
    return weights
