"""The plain single-GPU reference: the simplest correct GPT-2 training step, written without mpcli.

bf16 autocast, torch.compile of the whole model, fused AdamW, random tokens (throughput does not
depend on the data). `python bench/run.py reference --model large` prints one JSON line: tokens/s, MFU
and peak memory (GiB, as `max_memory_allocated / 2**30`). `run.py compare` measures it before mpcli's
layouts of the same model, so every ratio is against this step on the same GPU.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers: int, heads: int, dim: int, vocab: int, seq: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(seq, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def measure(
    *,
    layers: int = 24,
    heads: int = 16,
    dim: int = 1024,
    batch: int = 16,
    seq: int = 1024,
    vocab: int = 50304,
    steps: int = 30,
    warmup: int = 10,
    peak_tflops: float = 989.0,
) -> dict[str, object]:
    """Time `steps` training steps after `warmup` untimed ones; tokens/s is over the timed steps' mean."""
    torch.manual_seed(0)
    model = GPT(layers, heads, dim, vocab, seq).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    step_fn = torch.compile(model)
    tokens = torch.randint(0, vocab, (batch, seq + 1), device="cuda")
    times = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_fn(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    n = 12 * layers * dim**2 + vocab * dim
    flops_per_token = 6 * n + 12 * layers * dim * seq
    tps = batch * seq / (sum(times) / len(times))
    return {
        "tokens_per_s": tps, "mfu": tps * flops_per_token / (peak_tflops * 1e12),
        "max_mem_gb": torch.cuda.max_memory_allocated() / 2**30, "loss": float(loss),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "device": torch.cuda.get_device_name(),
        "torch": torch.__version__, "check": math.isfinite(float(loss)),
    }  # fmt: skip
