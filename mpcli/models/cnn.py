"""A ResNet-style image classifier for the embedded shapes data set (data/shapes.py).

Blocks are residual units; the width doubles (and the resolution halves) every `n_layer // 3` blocks.
GroupNorm instead of BatchNorm keeps results independent of how a batch is split into microbatches or
data-parallel replicas. No tensor-parallel plan: at 32-256 channels on 32x32 images a convolution
costs ~10-40 MFLOP per sample while its activations are 64-256 KB per sample, so the all-reduce per
layer that channel sharding needs would cost more than it saves; use pp and dp instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig
from mpcli.models.base import FamilySpec, StagedModel, TaskSpec, check_sizes, classification_loss


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(c_out)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def block_shapes(cfg: ModelConfig) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of every block: three widths, doubling."""
    per_width = max(1, cfg.n_layer // 3)
    shapes, c_in = [], cfg.channels
    for i in range(cfg.n_layer):
        level = min(2, i // per_width)
        c_out = cfg.channels * 2**level
        stride = 2 if c_out != c_in else 1
        shapes.append((c_in, c_out, stride))
        c_in = c_out
    return shapes


class ConvNet(StagedModel):
    """Images (B, 3, S, S) -> class logits (B, n_classes)."""

    first_parts = ("stem", "stem_norm")
    last_parts = ("head",)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.stem: nn.Conv2d | None = nn.Conv2d(3, cfg.channels, 3, padding=1, bias=False)
        self.stem_norm: nn.GroupNorm | None = _norm(cfg.channels)
        self.blocks = nn.ModuleDict({str(i): ResBlock(*shape) for i, shape in enumerate(block_shapes(cfg))})
        self.head: nn.Linear | None = nn.Linear(block_shapes(cfg)[-1][1], cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None and self.stem_norm is not None:
            x = F.relu(self.stem_norm(self.stem(x)))  # (B, C, S, S)
        for block in self.blocks.values():
            x = block(x)
        if self.head is not None:
            x = self.head(x.mean(dim=(2, 3)))  # global average pool -> (B, n_classes)
        return x

    def flops_per_sample(self) -> float:
        """3 x forward multiply-adds x 2, from each convolution's output size and kernel."""
        cfg = self.cfg
        side, macs = cfg.image_size, 3 * cfg.channels * 9 * cfg.image_size**2
        for c_in, c_out, stride in block_shapes(cfg):
            side //= stride
            shortcut = c_in if stride != 1 or c_in != c_out else 0
            macs += side * side * c_out * (c_in * 9 + c_out * 9 + shortcut)
        macs += block_shapes(cfg)[-1][1] * cfg.n_classes
        return 6.0 * macs


def task(cfg: ModelConfig) -> TaskSpec:
    return TaskSpec(loss_fn=classification_loss, tokens_per_sample=1, accuracy=True)


SPEC = FamilySpec(
    name="cnn",
    model=ConvNet,
    task=task,
    data=("shapes",),
    check=check_sizes,
    # Its small convolutions would spend more on per-layer all-reduces than they save.
    no_tp="the cnn family has no tensor-parallel plan (its small convolutions would spend more on "
    "per-layer all-reduces than they save); use parallel.pp or parallel.dp",
)
