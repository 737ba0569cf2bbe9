"""The plain single-GPU Llama reference: the simplest correct training step of a Llama-style model,
written without mpcli (RMSNorm, rotary grouped-query attention, SwiGLU, no biases, untied head unless
--tied).

bf16 autocast, torch.compile of the whole model, fused AdamW, random tokens (throughput does not depend
on the data). Prints one JSON line: tokens/s, MFU and peak memory (GiB, `max_memory_allocated / 2**30`),
so that mpcli's run of the same shape and batch on the same GPU can be compared as a ratio:

    python bench/run.py reference-llama --layers 16 --heads 32 --kv-heads 8 --dim 2048 --ffn 8192 \
        --vocab 128256 --seq 2048 --batch 4 --tied
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class Norm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype)


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half rotary embedding of x (B, heads, T, hd)."""
    t, hd = x.shape[-2], x.shape[-1]
    freq = 1.0 / theta ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    ang = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), freq).repeat(1, 2)
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * ang.cos() + torch.cat([-x2, x1], dim=-1) * ang.sin()).to(x.dtype)


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, ffn: int, theta: float) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd, self.theta = heads, kv_heads, dim // heads, theta
        self.n1, self.n2 = Norm(dim), Norm(dim)
        self.wqkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.hd, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.w13 = nn.Linear(dim, 2 * ffn, bias=False)
        self.w2 = nn.Linear(ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.wqkv(self.n1(x)).view(b, t, self.heads + 2 * self.kv_heads, self.hd).transpose(1, 2)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=1)
        q, k = rope(q, self.theta), rope(k, self.theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.wo(y.transpose(1, 2).reshape(b, t, d))
        gate, up = self.w13(self.n2(x)).chunk(2, dim=-1)
        return x + self.w2(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.dim)
        layers = (Layer(a.dim, a.heads, a.kv_heads, a.ffn, a.theta) for _ in range(a.layers))
        self.layers = nn.ModuleList(layers)
        self.norm = Norm(a.dim)
        self.head = nn.Linear(a.dim, a.vocab, bias=False)
        if a.tied:
            self.head.weight = self.embed.weight
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def flops_per_token(a: argparse.Namespace) -> float:
    hd = a.dim // a.heads
    per_layer = a.dim * hd * (2 * a.heads + 2 * a.kv_heads) + 3 * a.dim * a.ffn
    return 6 * (a.layers * per_layer + a.vocab * a.dim) + 12 * a.layers * a.dim * a.seq


def measure(a: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    model = Llama(a).cuda()
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
    tps = a.batch * a.seq / (sum(times) / len(times))
    return {
        "tokens_per_s": tps, "mfu": tps * flops_per_token(a) / (a.peak_tflops * 1e12),
        "max_mem_gb": torch.cuda.max_memory_allocated() / 2**30, "loss": float(loss),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "device": torch.cuda.get_device_name(),
        "torch": torch.__version__, "check": math.isfinite(float(loss)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("layers", 16), ("heads", 32), ("kv-heads", 8), ("dim", 2048), ("ffn", 8192),
                          ("vocab", 128256), ("seq", 2048), ("batch", 4),
                          ("steps", 30), ("warmup", 10)]:  # fmt: skip
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--theta", type=float, default=500000.0)
    parser.add_argument("--peak-tflops", type=float, default=989.0)  # H100/H200 dense bf16
    parser.add_argument("--tied", action="store_true")
    print(json.dumps(measure(parser.parse_args())))


if __name__ == "__main__":
    main()
