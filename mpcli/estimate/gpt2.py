"""GPT-2 activation memory from its shapes (models/gpt2.py), per microbatch.

On the meta device scaled-dot-product attention takes its math path and would save the (T x T)
attention matrices; on GPUs (and in torch's CPU kernel) it runs flash / memory-efficient attention,
which saves only q, k, v, the output and a log-sum-exp row per head. So GPT-2 is not measured but
derived here; tests check these formulas against the tensors a real CPU block saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpcli.config.schema import ModelConfig

FP32 = 4
INDEX = 8  # int64 token ids / targets


@dataclass(frozen=True)
class Shapes:
    b: int  # microbatch size
    s: int  # sequence length
    h: int  # d_model
    a: int  # heads
    v: int  # vocabulary
    tp: int
    sp: bool  # sequence parallel: the residual stream is sharded along the sequence over tp
    bf16: bool  # bf16 autocast: matmul inputs and outputs in bf16, the residual stream stays fp32

    @property
    def e(self) -> int:
        """Bytes per element of matmul inputs/outputs."""
        return 2 if self.bf16 else FP32

    @property
    def s_local(self) -> int:
        """Sequence positions of the residual stream on one tp rank."""
        return self.s // self.tp if self.sp else self.s


def shapes(m: ModelConfig, *, microbatch_size: int, tp: int, sp: bool, bf16: bool) -> Shapes:
    return Shapes(microbatch_size, m.seq_len, m.d_model, m.n_head, m.vocab, tp, sp and tp > 1, bf16)


def block_bytes(x: Shapes) -> float:
    """Bytes one transformer block saves for backward, for one microbatch on one tp rank.

    With b = microbatch, s = sequence, s' = s / tp under sequence parallel (else s), h = d_model,
    a = heads, t = tp, e = 2 under bf16 autocast (else 4):

        ln_1, ln_2 inputs (fp32 residual stream)   2 x 4 b s' h   + mean/rstd 2 x 2 x 4 b s'
        q, k, v inputs                             bf16: 3 x e b s h (each Linear casts its own copy)
                                                   fp32: 4 b s h (one tensor, saved three times)
        q, k, v and the attention output           4 x e b s h / t (flash / memory-efficient
                                                   attention writes its output (B, T, heads, hd), so
                                                   attn.proj's input is a view of it, not a copy)
        attention log-sum-exp                      4 b (a / t) s
        mlp.fc input                               bf16: e b s h; fp32: 4 b s h
        GELU input, mlp.proj input                 2 x e b s 4h / t

    bf16, t = 1: 40 b s h + 16 b s + 4 a b s; fp32: 64 b s h + 16 b s + 4 a b s. Dropout at p = 0 and
    the residual additions save nothing. The bf16 copies of the weights that autocast keeps are counted
    apart (estimate/memory.py). Under sequence parallel the gathered inputs of attention and
    the MLP are full-length (s), the norms' inputs are sharded (s').
    """
    b, s, h, t, e = x.b, x.s, x.h, x.tp, x.e
    norms = 2 * (FP32 * b * x.s_local * h + 2 * FP32 * b * x.s_local)
    matmul_inputs = (3 * e + e) * b * s * h if x.bf16 else 2 * FP32 * b * s * h
    attention = 4 * e * b * s * h / t + FP32 * b * (x.a // t) * s
    mlp = 2 * e * b * s * 4 * h / t
    return norms + matmul_inputs + attention + mlp


def first_bytes(x: Shapes) -> float:
    """Token and position embeddings save their indices: 8 b s + 8 s."""
    return INDEX * x.b * x.s + INDEX * x.s


def vocab_local(x: Shapes, loss_parallel: bool) -> int:
    """Vocabulary entries of the logits on one tp rank (sharded only under loss_parallel)."""
    return x.v // x.tp if loss_parallel and x.tp > 1 else x.v


def last_bytes(x: Shapes, *, loss_parallel: bool, compiled_loss: bool = False) -> float:
    """ln_f input + stats (fp32), the head's input (bf16 copy, or the fp32 norm output), the targets
    8 b s, the loss's total weight (one float) and what the loss keeps of the logits (V / t of the
    vocabulary under loss_parallel): eager, the fp32 log-softmax output 4 b s V (the loss upcasts the
    logits); compiled (fused upcast, log-softmax and NLL), the logits as they come, e b s V, and two
    fp32 statistics per position (max, log-sum-exp), 8 b s."""
    head_input = x.e * x.b * x.s * x.h if x.bf16 else FP32 * x.b * x.s * x.h
    ln_f = FP32 * x.b * x.s_local * x.h + 2 * FP32 * x.b * x.s_local
    v = vocab_local(x, loss_parallel)
    kept = x.e * x.b * x.s * v + 2 * FP32 * x.b * x.s if compiled_loss else FP32 * x.b * x.s * v
    return ln_f + head_input + kept + INDEX * x.b * x.s + FP32


def logits_bytes(x: Shapes, *, loss_parallel: bool) -> float:
    """The head's output for one microbatch (the pipeline keeps it to return the merged output)."""
    return x.e * x.b * x.s * vocab_local(x, loss_parallel)


def loss_backward_bytes(x: Shapes, *, loss_parallel: bool, compiled_loss: bool = False) -> float:
    """Temporaries of the loss backward: eager, the gradients of the log-softmax output and input
    (fp32, 2 x 4 b s V); compiled, only the logits' gradient, written in their dtype (e b s V)."""
    v = vocab_local(x, loss_parallel)
    return x.e * x.b * x.s * v if compiled_loss else 2 * FP32 * x.b * x.s * v
