"""Data sets: the embedded byte corpus, uint16 token files, and the generated shapes / teacher tasks."""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpcli.config.schema import DataConfig, ModelConfig
from mpcli.data.sampler import Dataset, TokenWindows
from mpcli.data.shapes import ShapesDataset
from mpcli.data.synthetic import TeacherTask
from mpcli.data.token_file import token_file_layout


@dataclass
class TokenSplits:
    train: np.ndarray  # 1-D token ids
    eval: np.ndarray


def byte_corpus(max_bytes: int) -> np.ndarray:
    """Bytes of this Python's standard-library sources, in a fixed order: text every install has."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    return np.frombuffer(b"".join(chunks)[:max_bytes], dtype=np.uint8)


def token_file(path: str) -> np.ndarray:
    """A uint16 token memmap (nanoGPT .bin), skipping an llm.c header when present."""
    file = Path(path).expanduser()  # as validate.py checks it: `~/data.bin` must work
    layout = token_file_layout(file, f"data.path={path}")
    return np.memmap(file, dtype=np.uint16, mode="r", offset=layout.offset, shape=(layout.count,))


def load_tokens(cfg: DataConfig) -> TokenSplits:
    tokens = byte_corpus(cfg.corpus_bytes) if cfg.name == "bytes-corpus" else token_file(str(cfg.path))
    cut = int(len(tokens) * (1 - cfg.eval_fraction))
    return TokenSplits(train=tokens[:cut], eval=tokens[cut:])


def load_datasets(data: DataConfig, model: ModelConfig, *, seed: int) -> tuple[Dataset, Dataset]:
    """Train and held-out data sets for `data.name`."""
    if data.name in ("bytes-corpus", "tokens"):
        splits = load_tokens(data)
        return (
            TokenWindows(splits.train, model.seq_len, model.vocab),
            TokenWindows(splits.eval, model.seq_len, model.vocab),
        )
    eval_size = max(1, int(data.size * data.eval_fraction))
    if data.name == "shapes":
        return (
            ShapesDataset(data.size, model.image_size, seed),
            ShapesDataset(eval_size, model.image_size, seed, offset=1),
        )
    return (
        TeacherTask(data.size, model.in_features, model.n_classes, seed),
        TeacherTask(eval_size, model.in_features, model.n_classes, seed, offset=1),
    )
