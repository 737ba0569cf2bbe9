"""The plain single-GPU reference: the simplest correct GPT-2 training step, written without mpcli.

bf16 autocast, torch.compile of the whole model, fused AdamW, random tokens (throughput does not
depend on the data). Prints one JSON line: tokens/s, MFU and peak memory.
Usage: python3 bench/reference_gpt2.py --layers 24 --heads 16 --dim 1024 --batch 16 --steps 30
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser()
    for name, default in [("layers", 24), ("heads", 16), ("dim", 1024), ("batch", 16), ("seq", 1024),
                          ("vocab", 50304), ("steps", 30), ("warmup", 10)]:  # fmt: skip
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = GPT(a.layers, a.heads, a.dim, a.vocab, a.seq).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    step_fn = torch.compile(model)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device="cuda")
    times = []
    for step in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_fn(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - start)
    n = 12 * a.layers * a.dim**2 + a.vocab * a.dim
    flops_per_token = 6 * n + 12 * a.layers * a.dim * a.seq
    tps = a.batch * a.seq / (sum(times) / len(times))
    print(json.dumps({
        "tokens_per_s": tps, "mfu": tps * flops_per_token / (a.peak_tflops * 1e12),
        "max_mem_gb": torch.cuda.max_memory_allocated() / 2**30, "loss": float(loss),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "device": torch.cuda.get_device_name(),
        "torch": torch.__version__, "check": math.isfinite(float(loss)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
