"""A deterministic sampler that restarts at any step and reshards across dp.

Sample number g of the run (a *global* index: step * global_batch + position in the global batch)
always maps to the same data-set item, whatever dp is; dp rank r of step s takes the contiguous slice
[s * global_batch + r * local_batch, ... + local_batch). Items are shuffled once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


class Dataset(Protocol):
    def __len__(self) -> int: ...

    def items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the given items, stacked along a new first dim."""
        ...


@dataclass
class TokenWindows:
    """Non-overlapping windows of seq_len + 1 tokens: inputs and next-token targets (seq_len each)."""

    tokens: np.ndarray  # 1-D token ids
    seq_len: int
    vocab: int | None = None  # ids must be below it (an embedding lookup beyond it fails obscurely)

    def __post_init__(self) -> None:
        if len(self) < 1:
            raise ValueError(f"{len(self.tokens)} tokens hold no window of seq_len={self.seq_len} + 1")

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [
            np.asarray(self.tokens[i * self.seq_len : i * self.seq_len + self.seq_len + 1], dtype=np.int64)
            for i in indices
        ]
        data = torch.from_numpy(np.stack(rows))  # (len(indices), seq_len + 1)
        if self.vocab is not None and int(data.max()) >= self.vocab:
            raise ValueError(
                f"data: token id {int(data.max())} is >= model.vocab={self.vocab}; the tokens were made "
                "for a larger vocabulary: set model.vocab to at least the tokenizer's size"
            )
        return data[:, :-1], data[:, 1:]


@dataclass
class GlobalSampler:
    dataset: Dataset
    local_batch: int  # samples per step on one dp rank (microbatch_size x microbatches)
    dp: int = 1
    dp_rank: int = 0
    seed: int = 0
    # Global index of step 0's first sample; a resume under another global batch size sets it so
    # that the run continues at the sample where the checkpoint stopped.
    offset: int = 0
    _perms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def global_batch(self) -> int:
        return self.local_batch * self.dp

    def item_of(self, sample: int) -> int:
        """Data-set item of global sample number `sample`."""
        epoch, pos = divmod(sample, len(self.dataset))
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))}
        return int(self._perms[epoch][pos])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (local_batch, ...) inputs and targets of `step`."""
        first = self.offset + step * self.global_batch + self.dp_rank * self.local_batch
        return self.dataset.items([self.item_of(s) for s in range(first, first + self.local_batch)])
