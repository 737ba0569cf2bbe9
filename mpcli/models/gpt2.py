"""GPT-2: token + position embedding -> transformer blocks -> final norm + (tied) output head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig
from mpcli.models.base import StagedModel, TaskSpec, classification_loss


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
        b, t = x.shape[0], x.shape[1]
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


# Megatron-style: q/k/v and fc column-parallel, their output projections row-parallel, so each
# attention and MLP costs one all-reduce; the embedding and head are sharded over the vocabulary.
TP_PLAN = {
    "wte": "embedding",
    "wpe": "embedding",
    "blocks.*.attn.q": "colwise",
    "blocks.*.attn.k": "colwise",
    "blocks.*.attn.v": "colwise",
    "blocks.*.attn.proj": "rowwise",
    "blocks.*.mlp.fc": "colwise",
    "blocks.*.mlp.proj": "rowwise",
    "head": "head",
}
# With sequence parallelism the residual stream stays sharded along the sequence: norms run on their
# shard and attention/MLP inputs are gathered first; row-wise outputs are reduce-scattered back.
SP_PLAN = {
    **TP_PLAN,
    "blocks.*.ln_1": "sequence_parallel",
    "blocks.*.ln_2": "sequence_parallel",
    "blocks.*.attn": "gather_sequence",
    "blocks.*.mlp": "gather_sequence",
    "ln_f": "sequence_parallel",
}


class GPT2(StagedModel):
    """Token ids (B, T) -> logits (B, T, vocab); a middle stage maps hidden (B, T, D) -> (B, T, D)."""

    first_parts = ("wte", "wpe")
    last_parts = ("ln_f", "head")
    residual_projections = ("attn.proj.weight", "mlp.proj.weight")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
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
        return self.cfg.tie_embeddings and self.head is not None and self.wte is None

    def tied_pair(self) -> list[nn.Parameter]:
        """The embedding on a first stage and the head copy on a last stage, when not the same stage."""
        if not self.cfg.tie_embeddings or (self.wte is not None and self.head is not None):
            return []
        if self.wte is not None:
            return [self.wte.weight]
        return [self.head.weight] if self.head is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wte is not None and self.wpe is not None:
            pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
            x = self.drop(self.wte(x) + self.wpe(pos))  # (B, T, D)
        for block in self.blocks.values():
            x = block(x)
        if self.ln_f is not None and self.head is not None:
            x = self.head(self.ln_f(x))  # (B, T, vocab)
        return x

    def init_key(self, name: str) -> str:
        return "wte.weight" if name == "head.weight" and self.cfg.tie_embeddings else name

    def weight_std(self, name: str) -> float:
        return 0.02

    def flops_per_sample(self) -> float:
        """6 N per token (N without position embeddings) + attention 12 L d T, times T tokens."""
        c = self.cfg
        n = 12 * c.n_layer * c.d_model**2 + c.vocab * c.d_model
        return (6 * n + 12 * c.n_layer * c.d_model * c.seq_len) * c.seq_len

    def tp_plan(self, sequence_parallel: bool) -> dict[str, str]:
        return dict(SP_PLAN if sequence_parallel else TP_PLAN)


def task(cfg: ModelConfig) -> TaskSpec:
    return TaskSpec(loss_fn=classification_loss, tokens_per_sample=cfg.seq_len, accuracy=False)
