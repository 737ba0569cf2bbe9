"""A deterministic sampler over fixed windows that restarts at any step and reshards across dp.

Sample number g of the run (a *global* index: step * global_batch + position in the global batch)
always maps to the same window, whatever dp is; dp rank r of step s takes the contiguous slice
[s * global_batch + r * local_batch, ... + local_batch). Windows are shuffled once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class WindowSampler:
    tokens: np.ndarray  # 1-D token ids
    seq_len: int
    local_batch: int  # samples per step on one dp rank (microbatch_size x microbatches)
    dp: int = 1
    dp_rank: int = 0
    seed: int = 0
    _perms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.n_windows < 1:
            raise ValueError(f"{len(self.tokens)} tokens hold no window of seq_len={self.seq_len} + 1")

    @property
    def n_windows(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    @property
    def global_batch(self) -> int:
        return self.local_batch * self.dp

    def window_of(self, sample: int) -> int:
        epoch, pos = divmod(sample, self.n_windows)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)}
        return int(self._perms[epoch][pos])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, each (local_batch, seq_len) int64, for `step` on this rank."""
        first = step * self.global_batch + self.dp_rank * self.local_batch
        rows = []
        for sample in range(first, first + self.local_batch):
            start = self.window_of(sample) * self.seq_len
            rows.append(np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64))
        data = torch.from_numpy(np.stack(rows))  # (local_batch, seq_len + 1)
        return data[:, :-1], data[:, 1:]
