"""Checkpoint directories on disk: naming, atomic commit, "latest", pruning, and safe metadata reads.

A checkpoint is a directory `step_<N>/` written by torch.distributed.checkpoint (one `.distcp` file per
writing rank plus DCP's `.metadata`) and our `meta.json`. Ranks write into `step_<N>.partial/`; after
every rank finished, global rank 0 adds `meta.json`, renames the directory to `step_<N>/` and then
points the `latest` file at it. A directory ending in `.partial` is never loaded and is deleted by the
next run that uses the same checkpoint directory.

DCP's `.metadata` is a pickle; it is only ever read through `safe_metadata`, which refuses code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from mpcli.checkpoint.safe_metadata import DCP_METADATA, load_metadata
from mpcli.config.schema import CheckpointConfig
from mpcli.errors import ConfigError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
META = "meta.json"
PARTIAL = ".partial"
FORMAT = 1
# Key prefixes inside a checkpoint: model weights, optimizer state, per-rank RNG states.
MODEL, OPTIM, RNG = "model.", "optim.", "rng."


@dataclass
class Layout:
    """How the run that saved a checkpoint was split (for `mpcli checkpoint list` and RNG restore)."""

    pp: int
    dp: int
    tp: int
    schedule: str
    virtual_stages: int
    world_size: int

    def __str__(self) -> str:
        return f"pp{self.pp}×dp{self.dp}×tp{self.tp} {self.schedule} ({self.world_size} ranks)"


@dataclass
class CheckpointMeta:
    step: int  # optimizer steps done
    samples: int  # global sample index of the next sample to train on
    tokens: int  # tokens seen
    layout: Layout
    model: dict[str, Any]  # the ModelConfig it was saved with
    lr_schedule: dict[str, Any] = field(default_factory=dict)
    saved_at: str = ""
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        data = json.loads(text)
        data["layout"] = Layout(**data["layout"])
        return cls(**data)


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(cfg: CheckpointConfig, run_dir: Path) -> Path:
    return Path(cfg.dir).expanduser() if cfg.dir else run_dir / CHECKPOINTS


def is_complete(path: Path) -> bool:
    return not path.name.endswith(PARTIAL) and (path / META).is_file() and (path / DCP_METADATA).is_file()


def read_meta(path: Path) -> CheckpointMeta:
    file = path / META
    try:
        return CheckpointMeta.from_json(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{file}: not a readable mpcli checkpoint description ({type(exc).__name__})"
        ) from None


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and is_complete(p)]
    return sorted(found, key=lambda p: read_meta(p).step)


def latest(root: Path) -> Path | None:
    """The checkpoint `latest` names; the newest complete one if that file is missing or stale."""
    marker = root / LATEST
    if marker.is_file():
        name = marker.read_text(encoding="utf-8", errors="replace").strip()
        named = root / name
        if Path(name).name == name and name not in ("", ".", "..") and is_complete(named):  # no path out
            return named
    complete = list_checkpoints(root)
    return complete[-1] if complete else None


def resolve(path: Path) -> Path | None:
    """A checkpoint directory itself, or the latest one of a checkpoints directory or a run directory."""
    if is_complete(path):
        return path
    for root in (path / CHECKPOINTS, path):
        found = latest(root)
        if found is not None:
            return found
    return None


def clean_partials(root: Path) -> list[Path]:
    """Delete what crashed saves left behind (call where no save is in flight)."""
    partials = sorted(root.glob(f"step_*{PARTIAL}")) if root.is_dir() else []
    for path in partials:
        shutil.rmtree(path, ignore_errors=True)
    return partials


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def commit(partial: Path, meta: CheckpointMeta) -> Path:
    """Make a fully written checkpoint visible: meta.json, rename, then point `latest` at it."""
    _write_atomic(partial / META, meta.to_json())
    final = partial.with_name(partial.name.removesuffix(PARTIAL))
    stale = final.with_name(final.name + ".stale")
    if final.exists():  # the same step saved again (resumed from an older checkpoint)
        os.replace(final, stale)
    os.replace(partial, final)
    _write_atomic(final.parent / LATEST, final.name)
    shutil.rmtree(stale, ignore_errors=True)
    return final


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (never the latest)."""
    current = latest(root)
    doomed = [p for p in list_checkpoints(root)[:-keep] if p != current] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


def tensors(path: Path, prefix: str = "") -> dict[str, TensorInfo]:
    """Global shape and dtype of each tensor saved in a checkpoint whose key starts with `prefix`
    (the prefix is removed from the returned names). Raises `UnsafeCheckpoint` for metadata that
    is refused or unreadable."""
    metadata = load_metadata(path / DCP_METADATA)
    return {
        key.removeprefix(prefix): TensorInfo(tuple(md.size), md.properties.dtype)
        for key, md in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(md, TensorStorageMetadata)
    }


def size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
