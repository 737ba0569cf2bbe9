"""Hugging Face model directories: read the weights of one (sharded or not), write one from a checkpoint.

A directory holds `config.json` and either `model.safetensors` or shards listed by
`model.safetensors.index.json` (`weight_map`: tensor name -> shard file). Only safetensors are read
(no pickle); shard names must be plain file names inside the directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mpcli.config.schema import ModelConfig
from mpcli.errors import ConfigError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class Weights:
    """The tensors of one or more safetensors files behind one name -> tensor interface."""

    def __init__(self, handles: dict[str, Any]) -> None:
        self._handles = handles  # tensor name -> the open file that holds it

    def keys(self) -> list[str]:
        return list(self._handles)

    def get_slice(self, key: str) -> Any:
        return self._handles[key].get_slice(key)

    def get_tensor(self, key: str) -> torch.Tensor:
        return self._handles[key].get_tensor(key)


def _shard_files(directory: Path, key: str) -> list[Path]:
    index = directory / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{key}: {index} is not a safetensors index (no weight_map)") from None
        for name in names:
            if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
                raise ConfigError(f"{key}: {index} names a shard outside the directory: {name!r}")
        return [directory / name for name in names]
    if (directory / SINGLE).is_file():
        return [directory / SINGLE]
    raise ConfigError(f"{key}: {directory} holds neither {SINGLE} nor {INDEX}")


@contextmanager
def open_weights(path: Path, key: str) -> Iterator[Weights]:
    """A safetensors file, or a Hugging Face model directory (sharded or not), opened for reading."""
    files = _shard_files(path, key) if path.is_dir() else [path]
    with ExitStack() as stack:
        handles: dict[str, Any] = {}
        for file in files:
            if not file.is_file():
                raise ConfigError(f"{key}: {file} not found")
            try:
                handle = stack.enter_context(safe_open(str(file), framework="pt"))
            except Exception as exc:  # safetensors' own errors: not a safetensors file, truncated
                raise ConfigError(f"{key}: {file} is not a readable safetensors file ({exc})") from None
            handles.update(dict.fromkeys(handle.keys(), handle))
        yield Weights(handles)


def write_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig, out: Path) -> dict[str, torch.Tensor]:
    """`out/` as transformers loads it: config.json and model.safetensors, from mpcli's full weights."""
    from mpcli.models import family_spec

    spec = family_spec(cfg.family)
    if spec.hf is None:
        raise ConfigError(f"--format hf: the {cfg.family} family has no Hugging Face layout; use safetensors")
    tensors = spec.hf.to_hf(weights, cfg)
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    config = {**spec.hf.config(cfg), "torch_dtype": dtype}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / SINGLE), metadata={"format": "pt"})
    return tensors
