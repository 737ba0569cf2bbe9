"""GPT-2 as an ordered list of blocks that a pipeline split may cut between.

Every stage keeps the full model's parameter names (blocks in a ModuleDict keyed by the global block
index; parts a stage does not own are removed), so checkpoints and parity tests line up across layouts.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.d_model // cfg.n_head
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # (B, T, D) -> (B, n_head, T, head_dim); -1 heads so a sharded layer sees its local heads.
        q, k, v = (lin(x).view(b, t, -1, self.head_dim).transpose(1, 2) for lin in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT2(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab); a middle stage maps hidden (B, T, D) -> (B, T, D)."""

    # Output projections of each residual branch: GPT-2 scales their init by 1/sqrt(2 * n_layer).
    residual_projections = ("attn.proj.weight", "mlp.proj.weight")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte: nn.Embedding | None = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe: nn.Embedding | None = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layer)})
        self.ln_f: nn.LayerNorm | None = nn.LayerNorm(cfg.d_model)
        self.head: nn.Linear | None = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with the head when both live on this stage."""
        if self.cfg.tie_embeddings and self.wte is not None and self.head is not None:
            self.head.weight = self.wte.weight

    @property
    def head_is_separate_copy(self) -> bool:
        """True on a last stage whose head is a copy of the tied embedding held by the first stage."""
        return self.cfg.tie_embeddings and self.head is not None and self.wte is None

    def keep_stage(self, block_ids: list[int], *, first: bool, last: bool) -> None:
        """Remove everything this pipeline stage does not own (call on the meta device)."""
        for key in [k for k in self.blocks if int(k) not in block_ids]:
            del self.blocks[key]
        if not first:
            self.wte = self.wpe = None
        if not last:
            self.ln_f = self.head = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wte is not None and self.wpe is not None:
            pos = torch.arange(x.shape[1], device=x.device)
            x = self.drop(self.wte(x) + self.wpe(pos))  # (B, T, D)
        for block in self.blocks.values():
            x = block(x)
        if self.ln_f is not None and self.head is not None:
            x = self.head(self.ln_f(x))  # (B, T, vocab)
        return x

    def init_key(self, name: str) -> str:
        """The name whose seeded values a parameter takes: a separate head copies the embedding."""
        return "wte.weight" if name == "head.weight" and self.cfg.tie_embeddings else name

    def init_std(self, name: str) -> float | None:
        """Normal std for weights; None for parameters with fixed init (biases, LayerNorm)."""
        if name.endswith(".bias") or ".ln_" in f".{name}":
            return None
        if name.endswith(self.residual_projections):
            return 0.02 / math.sqrt(2 * self.cfg.n_layer)
        return 0.02

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 N (N without position embeddings) + attention 12 L d T."""
        c = self.cfg
        n = 12 * c.n_layer * c.d_model**2 + c.vocab * c.d_model
        return 6 * n + 12 * c.n_layer * c.d_model * c.seq_len


def init_weights(model: GPT2, seed: int) -> None:
    """Deterministic per parameter name, so every layout starts from the same weights."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            std = model.init_std(model.init_key(name))
            if std is None:
                is_norm_weight = name.endswith("weight")
                param.fill_(1.0 if is_norm_weight else 0.0)
                continue
            gen = torch.Generator(device=param.device)
            gen.manual_seed(_name_seed(seed, model.init_key(name)))
            param.normal_(0.0, std, generator=gen)


def _name_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)
