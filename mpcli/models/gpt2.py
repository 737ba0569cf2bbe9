"""GPT-2: token + position embedding -> transformer blocks -> final norm + (tied) output head."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig
from mpcli.errors import ConfigError
from mpcli.models.base import (
    FamilySpec,
    HFAdapter,
    LanguageModel,
    Transform,
    check_sizes,
    keep,
    language_task,
    pad_rows,
)


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


class GPT2(LanguageModel):
    """Token ids (B, T) -> logits (B, T, vocab); a middle stage maps hidden (B, T, D) -> (B, T, D)."""

    first_parts = ("wte", "wpe")
    last_parts = ("ln_f", "head")
    residual_projections = ("attn.proj.weight", "mlp.proj.weight")
    plans = (TP_PLAN, SP_PLAN)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.wte: nn.Embedding | None = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe: nn.Embedding | None = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layer)})
        self.ln_f: nn.LayerNorm | None = nn.LayerNorm(cfg.d_model)
        self.head: nn.Linear | None = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.tie_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wte is not None and self.wpe is not None:
            pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
            x = self.drop(self.wte(x) + self.wpe(pos))  # (B, T, D)
        for block in self.blocks.values():
            x = block(x)
        if self.ln_f is not None and self.head is not None:
            x = self.head(self.ln_f(x))  # (B, T, vocab)
        return x

    def matmul_params(self) -> int:
        """Blocks (biases and norms left out) and the head; position embeddings are a lookup."""
        c = self.cfg
        return 12 * c.n_layer * c.d_model**2 + c.vocab * c.d_model


def _check(cfg: ModelConfig) -> None:
    check_sizes(cfg)
    if cfg.d_model % cfg.n_head:
        raise ConfigError(f"model.d_model={cfg.d_model}: must be divisible by model.n_head={cfg.n_head}")


def _tp_divisible(cfg: ModelConfig, sequence_parallel: bool) -> list[tuple[str, int]]:
    keys = [("model.n_head", cfg.n_head), ("model.vocab", cfg.vocab)]
    return [*keys, ("model.seq_len", cfg.seq_len)] if sequence_parallel else keys


# ---- Hugging Face GPT-2 (transformers' GPT2LMHeadModel) ------------------------------------------
# `h.<i>` may carry a `transformer.` prefix. Hugging Face's Conv1D computes x @ W + b with W stored
# (in, out); nn.Linear stores (out, in).
#
# mpcli                          Hugging Face GPT-2               how
# wte.weight (V, D)              wte.weight (50257, D)            rows padded with zeros up to V
# wpe.weight (T, D)              wpe.weight (1024, D)             first T rows
# blocks.i.ln_1 / ln_2 .*        h.i.ln_1 / ln_2 .*               as is
# blocks.i.attn.{q,k,v}.weight   h.i.attn.c_attn.weight (D, 3D)   columns [jD, (j+1)D), transposed
# blocks.i.attn.{q,k,v}.bias     h.i.attn.c_attn.bias (3D)        entries [jD, (j+1)D)
# blocks.i.attn.proj.*           h.i.attn.c_proj.*                weight transposed (Conv1D: in, out)
# blocks.i.mlp.fc.*              h.i.mlp.c_fc.*                   weight transposed
# blocks.i.mlp.proj.*            h.i.mlp.c_proj.*                 weight transposed
# ln_f.*                         ln_f.*                           as is
# head.weight (untied only)      lm_head.weight                   rows padded like wte

HF_MARKER = re.compile(r"(transformer\.)?h\.\d+\.attn\.c_attn\.weight")
HF_CONV1D = {"attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}


def _hf_source(name: str, cfg: ModelConfig, prefix: str) -> tuple[str, Transform]:
    """File key and transform giving mpcli's `name` from a Hugging Face GPT-2 state dict."""
    d = cfg.d_model
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if block:
        index, module, kind = block.groups()
        base = f"{prefix}h.{index}."
        if module in ("attn.q", "attn.k", "attn.v"):
            cols = slice("qkv".index(module[-1]) * d, ("qkv".index(module[-1]) + 1) * d)
            if kind == "weight":
                return base + "attn.c_attn.weight", lambda t: t[:, cols].t()
            return base + "attn.c_attn.bias", lambda t: t[cols]
        if module in HF_CONV1D:
            return f"{base}{HF_CONV1D[module]}.{kind}", (lambda t: t.t()) if kind == "weight" else keep
        return f"{base}{module}.{kind}", keep
    if name == "wte.weight":
        return prefix + name, pad_rows(cfg.vocab)
    if name == "wpe.weight":
        return prefix + name, lambda t: t[: cfg.seq_len]
    if name == "head.weight":
        return "lm_head.weight", pad_rows(cfg.vocab)
    return prefix + name, keep


def _to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers' GPT2LMHeadModel layout: q, k, v fused into c_attn, Conv1D weights transposed."""
    out = {}
    for name, tensor in state.items():
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", name)
        if block is None:
            key = "lm_head.weight" if name == "head.weight" else f"transformer.{name}"
            out[key] = tensor
            continue
        index, module, kind = block.groups()
        base = f"transformer.h.{index}."
        if module == "attn.q":
            parts = [state[f"blocks.{index}.attn.{x}.{kind}"] for x in "qkv"]
            fused = torch.cat([p.t() for p in parts], dim=1) if kind == "weight" else torch.cat(parts)
            out[f"{base}attn.c_attn.{kind}"] = fused  # (D, 3D) / (3D)
        elif module in HF_CONV1D:
            out[f"{base}{HF_CONV1D[module]}.{kind}"] = tensor.t() if kind == "weight" else tensor
        elif module not in ("attn.k", "attn.v"):
            out[f"{base}{module}.{kind}"] = tensor
    return {k: v.contiguous() for k, v in out.items()}


def _hf_config(cfg: ModelConfig) -> dict[str, object]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_positions": cfg.seq_len,
        "n_ctx": cfg.seq_len,
        "activation_function": "gelu_new",  # the tanh approximation
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "tie_word_embeddings": cfg.tie_embeddings,
    }


SPEC = FamilySpec(
    name="gpt2",
    model=GPT2,
    task=language_task,
    data=("bytes-corpus", "tokens"),
    tokens=True,
    ties_embeddings=True,
    check=_check,
    tp_divisible=_tp_divisible,
    activation_formula="gpt2_shapes",
    hf=HFAdapter(marker=HF_MARKER, source=_hf_source, to_hf=_to_hf, config=_hf_config),
)
