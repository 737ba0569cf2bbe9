"""Embedded tasks generated from a seed, item by item, so they need no download and no storage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TeacherTask:
    """Gaussian features labelled by a fixed random two-layer network: learnable, non-linear."""

    size: int
    in_features: int
    n_classes: int
    seed: int  # the teacher; items also depend on `offset` so train and eval differ
    offset: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 7])
        hidden = 4 * self.in_features
        self.w1 = rng.standard_normal((self.in_features, hidden)) / np.sqrt(self.in_features)
        self.w2 = rng.standard_normal((hidden, self.n_classes)) / np.sqrt(hidden)

    def __len__(self) -> int:
        return self.size

    def items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.stack([np.random.default_rng([self.seed, self.offset, i]).standard_normal(self.in_features)
                      for i in indices])  # fmt: skip
        labels = (np.tanh(x @ self.w1) @ self.w2).argmax(axis=1)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))
