"""Llama-style decoder: token embedding -> blocks (RMSNorm, rotary grouped-query attention, SwiGLU MLP,
no biases) -> final RMSNorm + (tied or untied) output head.

Key names follow GPT-2's where they mean the same (`n_layer`, `n_head`, `d_model`, `seq_len`, `vocab`,
`tie_embeddings`), plus `n_kv_head`, `ffn_hidden`, `rope_theta` and `norm_eps`. The numerics follow
Hugging Face's `LlamaForCausalLM` (rotate-half rotary embedding, RMSNorm in float32), so its weights map
one to one (see `HF_NAMES`).
"""

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


def kv_heads(cfg: ModelConfig) -> int:
    return cfg.n_kv_head or cfg.n_head


def ffn_hidden(cfg: ModelConfig) -> int:
    """SwiGLU width: `ffn_hidden`, else 8/3 d_model rounded up to a multiple of 256 (as Llama does)."""
    if cfg.ffn_hidden:
        return cfg.ffn_hidden
    hidden = 8 * cfg.d_model // 3
    return -(-hidden // 256) * 256


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 and cast back (plain ops, so DTensor shards it along
    the sequence under sequence parallelism)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary(t: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, head_dim) of the rotary angles, made on the fly (no buffer to materialise)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(t, device=device, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.d_model // cfg.n_head
        self.group = cfg.n_head // kv_heads(cfg)  # query heads per key/value head
        self.theta = cfg.rope_theta
        self.q = nn.Linear(cfg.d_model, cfg.n_head * self.head_dim, bias=False)
        self.k = nn.Linear(cfg.d_model, kv_heads(cfg) * self.head_dim, bias=False)
        self.v = nn.Linear(cfg.d_model, kv_heads(cfg) * self.head_dim, bias=False)
        self.o = nn.Linear(cfg.n_head * self.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim); -1 heads: a sharded layer has its local heads.
        q, k, v = (lin(x).view(b, t, -1, self.head_dim).transpose(1, 2) for lin in (self.q, self.k, self.v))
        cos, sin = rotary(t, self.head_dim, self.theta, x.device)
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(v.dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(v.dtype)
        # Each key/value head serves `group` consecutive query heads (the same on every tp shard).
        k, v = k.repeat_interleave(self.group, dim=1), v.repeat_interleave(self.group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, head_dim)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, ffn_hidden(cfg), bias=False)
        self.up = nn.Linear(cfg.d_model, ffn_hidden(cfg), bias=False)
        self.down = nn.Linear(ffn_hidden(cfg), cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


# q/k/v and gate/up column-parallel (whole heads per rank), o and down row-parallel: one all-reduce
# per attention and per MLP; the embedding and head are sharded over the vocabulary.
TP_PLAN = {
    "embed": "embedding",
    "blocks.*.attn.q": "colwise",
    "blocks.*.attn.k": "colwise",
    "blocks.*.attn.v": "colwise",
    "blocks.*.attn.o": "rowwise",
    "blocks.*.mlp.gate": "colwise",
    "blocks.*.mlp.up": "colwise",
    "blocks.*.mlp.down": "rowwise",
    "head": "head",
}
# Sequence parallel: norms run on each rank's slice of the sequence; attention and MLP gather it first.
SP_PLAN = {
    **TP_PLAN,
    "blocks.*.attn_norm": "sequence_parallel",
    "blocks.*.mlp_norm": "sequence_parallel",
    "blocks.*.attn": "gather_sequence",
    "blocks.*.mlp": "gather_sequence",
    "norm": "sequence_parallel",
}


class Llama(LanguageModel):
    """Token ids (B, T) -> logits (B, T, vocab); a middle stage maps hidden (B, T, D) -> (B, T, D)."""

    embedding_name = "embed"
    first_parts = ("embed",)
    last_parts = ("norm", "head")
    residual_projections = ("attn.o.weight", "mlp.down.weight")
    plans = (TP_PLAN, SP_PLAN)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.embed: nn.Embedding | None = nn.Embedding(cfg.vocab, cfg.d_model)
        self.blocks = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layer)})
        self.norm: RMSNorm | None = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head: nn.Linear | None = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.tie_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)  # (B, T, D)
        for block in self.blocks.values():
            x = block(x)
        if self.norm is not None and self.head is not None:
            x = self.head(self.norm(x))  # (B, T, vocab)
        return x

    def matmul_params(self) -> int:
        """Every linear weight: attention (q, o over all heads; k, v over the kv heads), SwiGLU, head."""
        c = self.cfg
        hd = c.d_model // c.n_head
        attn = c.d_model * hd * (2 * c.n_head + 2 * kv_heads(c))
        return c.n_layer * (attn + 3 * c.d_model * ffn_hidden(c)) + c.vocab * c.d_model


def _check(cfg: ModelConfig) -> None:
    check_sizes(cfg)
    from mpcli.config.layout_checks import positive

    if cfg.d_model % cfg.n_head or (cfg.d_model // cfg.n_head) % 2:
        raise ConfigError(
            f"model.d_model={cfg.d_model}: must be model.n_head={cfg.n_head} heads of an even size "
            "(rotary embeddings rotate pairs)"
        )
    if cfg.n_kv_head is not None:
        positive("model.n_kv_head", cfg.n_kv_head)
        if cfg.n_head % cfg.n_kv_head:
            raise ConfigError(f"model.n_kv_head={cfg.n_kv_head}: must divide model.n_head={cfg.n_head}")
    if cfg.ffn_hidden is not None:
        positive("model.ffn_hidden", cfg.ffn_hidden)
    positive("model.rope_theta", cfg.rope_theta)
    positive("model.norm_eps", cfg.norm_eps)
    if cfg.dropout:
        raise ConfigError(f"model.dropout={cfg.dropout}: the llama family has no dropout; set 0")


def _tp_divisible(cfg: ModelConfig, sequence_parallel: bool) -> list[tuple[str, int]]:
    keys = [
        ("model.n_head", cfg.n_head),
        ("model.n_kv_head" if cfg.n_kv_head else "model.n_head (= n_kv_head)", kv_heads(cfg)),
        ("model.ffn_hidden", ffn_hidden(cfg)),
        ("model.vocab", cfg.vocab),
    ]
    return [*keys, ("model.seq_len", cfg.seq_len)] if sequence_parallel else keys


# ---- Hugging Face Llama (transformers' LlamaForCausalLM): the same linears, other names -------------
HF_MARKER = re.compile(r"(model\.)?layers\.\d+\.self_attn\.q_proj\.weight")
HF_NAMES = {
    "attn_norm": "input_layernorm",
    "attn.q": "self_attn.q_proj",
    "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj",
    "attn.o": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
}


def _hf_source(name: str, cfg: ModelConfig, prefix: str) -> tuple[str, Transform]:
    """File key and transform giving mpcli's `name` from a Hugging Face Llama state dict."""
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)\.weight", name)
    if block:
        index, module = block.groups()
        return f"{prefix}layers.{index}.{HF_NAMES[module]}.weight", keep
    if name == "embed.weight":
        return f"{prefix}embed_tokens.weight", pad_rows(cfg.vocab)
    if name == "norm.weight":
        return f"{prefix}norm.weight", keep
    if name == "head.weight":
        return "lm_head.weight", pad_rows(cfg.vocab)
    return prefix + name, keep


def _to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers' LlamaForCausalLM names; a tied head is left to transformers to tie."""
    out = {}
    for name, tensor in state.items():
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)\.weight", name)
        if block:
            out[f"model.layers.{block[1]}.{HF_NAMES[block[2]]}.weight"] = tensor
        elif name == "head.weight":
            out["lm_head.weight"] = tensor
        else:
            out["model." + name.replace("embed.", "embed_tokens.")] = tensor
    return out


def _hf_config(cfg: ModelConfig) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.d_model,
        "intermediate_size": ffn_hidden(cfg),
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": kv_heads(cfg),
        "max_position_embeddings": cfg.seq_len,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }


SPEC = FamilySpec(
    name="llama",
    model=Llama,
    task=language_task,
    data=("bytes-corpus", "tokens"),
    tokens=True,
    ties_embeddings=True,
    check=_check,
    tp_divisible=_tp_divisible,
    hf=HFAdapter(marker=HF_MARKER, source=_hf_source, to_hf=_to_hf, config=_hf_config),
)
