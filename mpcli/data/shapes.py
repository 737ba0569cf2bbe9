"""Procedural 10-class image data: a coloured shape at a random place and size, on noise.

Item i is drawn from a generator seeded by (seed, offset, i), so the set needs no storage, is the same
on every rank, and train/eval splits differ by `offset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Mask = Callable[[np.ndarray, np.ndarray, float], np.ndarray]

# Class -> mask of the shape, from offsets (dx, dy) to the centre and a radius r.
SHAPES: list[Mask] = [
    lambda dx, dy, r: dx**2 + dy**2 <= r**2,  # disk
    lambda dx, dy, r: np.abs(np.sqrt(dx**2 + dy**2) - r) < 1.2,  # ring
    lambda dx, dy, r: np.maximum(np.abs(dx), np.abs(dy)) <= r,  # square
    lambda dx, dy, r: np.abs(np.maximum(np.abs(dx), np.abs(dy)) - r) < 1.0,  # square outline
    lambda dx, dy, r: (np.abs(dy) <= 1.5) & (np.abs(dx) <= r),  # horizontal bar
    lambda dx, dy, r: (np.abs(dx) <= 1.5) & (np.abs(dy) <= r),  # vertical bar
    lambda dx, dy, r: ((np.abs(dx) <= 1) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 1) & (np.abs(dx) <= r)),  # +
    lambda dx, dy, r: (np.abs(np.abs(dx) - np.abs(dy)) <= 1) & (np.abs(dx) <= r),  # x
    lambda dx, dy, r: (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2),  # triangle
    lambda dx, dy, r: np.abs(dx) + np.abs(dy) <= r,  # diamond
]


@dataclass
class ShapesDataset:
    size: int
    image_size: int
    seed: int
    offset: int = 0
    noise: float = 0.3

    def __len__(self) -> int:
        return self.size

    def item(self, index: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.seed, self.offset, index])
        label = int(rng.integers(len(SHAPES)))
        s = self.image_size
        r = rng.uniform(0.15, 0.3) * s
        cx, cy = rng.uniform(r, s - r, size=2)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        mask = SHAPES[label](xx - cx, yy - cy, r).astype(np.float32)  # (S, S)
        colour = rng.uniform(0.5, 1.0, size=(3, 1, 1)).astype(np.float32)
        image = mask[None] * colour + self.noise * rng.standard_normal((3, s, s)).astype(np.float32)
        return image, label  # (3, S, S)

    def items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(self.item(i) for i in indices), strict=True)
        return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)
