"""Peak memory of one rank during a training step, from its stages (no processes, no GPU).

What a rank holds (bytes; "local" = after tensor-parallel sharding, on the largest tp rank):

- parameters: float32 (bf16 autocast keeps float32 master weights). With dp > 1, FSDP2 shards each
  parameter's dim 0 over dp (padded to equal shards).
- gradients: float32, one per parameter. With dp > 1 the sharded gradients exist only after the step's
  reduce-scatter and are freed by the next `zero_grad`, so they are not in the peak; instead see below.
- optimizer: AdamW keeps exp_avg and exp_avg_sq (float32, sharded like the parameters) plus a float32
  step scalar per tensor; SGD (no momentum) keeps nothing.
- FSDP unsharded (dp > 1): torch's pipeline schedule runs every backward but the last with
  `set_reshard_after_backward(False)` and `set_requires_gradient_sync(False)`, and apply_dp
  (parallel/data.py) keeps parameters gathered after the forward when there are several microbatches,
  so during a step a rank holds its stages' parameters unsharded (bf16 under autocast: FSDP2's
  mixed-precision policy computes in bf16) and accumulates unsharded float32 gradients (the reduce
  dtype), reduce-scattered once at the end.
- bf16 weight copies: under bf16 autocast the cast of every Linear/Conv weight and bias is cached for
  the whole step (the step runs inside one autocast region), 2 bytes per element. With FSDP the
  gathered parameters are bf16 already and nothing is copied.
- activations: each stage's saved tensors per microbatch (stages.py) times the microbatches its
  schedule holds at the peak (schedule.py); with per-block activation checkpointing only each block's
  input is held, plus one block recomputed.
- outputs: with a torch whose schedules cannot skip it (OUTPUTS_ALWAYS_KEPT), the last stage keeps
  every microbatch's output for the merged result the schedule returns (GPT-2: the logits, b s V in
  the autocast dtype), and concatenates them at the end (a second copy); otherwise nothing.
- working memory: the largest temporary on top: the loss backward's gradients of the log-softmax
  (last stage) or one block's backward.

Peak = parameters + optimizer + (gradients, or FSDP unsharded) + bf16 copies
       + max(activations + outputs + working memory, 2 x outputs).
Not counted: the CUDA context and allocator fragmentation (≈ 0.5-1 GiB, see suggest.py's headroom),
NCCL buffers, p2p receive buffers (one activation each), the input batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpcli.config.schema import RunConfig
from mpcli.estimate.schedule import chunks_at_peaks
from mpcli.estimate.stages import Activations, Stage, activations
from mpcli.parallel.pipeline import OUTPUTS_ALWAYS_KEPT

FP32, BF16 = 4, 2


@dataclass
class RankMemory:
    pp_rank: int
    stages: list[int]
    params: float
    grads: float  # sharded gradients after the step (in the peak only when dp = 1)
    optimizer: float
    unsharded: float  # FSDP: unsharded parameters + gradient accumulators during the step
    casts: float
    activations: float
    checkpointed: float  # activations with per-block activation checkpointing instead
    outputs: float
    working: float
    dp: int

    def _peak(self, activations: float) -> float:
        state = self.params + self.optimizer + (self.grads if self.dp == 1 else self.unsharded) + self.casts
        return state + max(activations + self.outputs + self.working, 2 * self.outputs)

    @property
    def total(self) -> float:
        return self._peak(self.activations)

    @property
    def total_checkpointed(self) -> float:
        return self._peak(self.checkpointed)


def state_bytes(stage: Stage, *, dp: int, optimizer: str, bf16: bool) -> tuple[float, float, float, float]:
    """(parameters, gradients, optimizer state, FSDP unsharded parameters + gradients) of one stage."""
    local = sum(p.dp_numel(dp) for p in stage.params) * FP32
    states = 2 * local + FP32 * len(stage.params) if optimizer == "adamw" else 0.0
    gathered = sum(p.tp_numel for p in stage.params) * ((BF16 if bf16 else FP32) + FP32)
    return local, local, states, gathered if dp > 1 else 0.0


def rank_memory(
    run: RunConfig,
    stages: list[Stage],
    pp_rank: int,
    *,
    microbatch_size: int,
    bf16: bool,
    compiled: bool = False,
) -> RankMemory:
    """Peak memory of a rank at pipeline coordinate `pp_rank` (every dp / tp rank there alike)."""
    p, mode = run.parallel, run.train.activation_checkpointing
    mine = [s for s in stages if s.pp_rank == pp_rank]
    memory = RankMemory(pp_rank, [s.index for s in mine], *([0.0] * 9), dp=p.dp)
    held = []
    for stage in mine:
        state = state_bytes(stage, dp=p.dp, optimizer=run.train.optimizer, bf16=bf16)
        memory.params += state[0]
        memory.grads += state[1]
        memory.optimizer += state[2]
        memory.unsharded += state[3]
        if bf16 and p.dp == 1:
            memory.casts += BF16 * sum(q.tp_numel for q in stage.params if q.cast)
        a = activations(run, stage, microbatch_size=microbatch_size, bf16=bf16, compiled=compiled)
        held.append(a)
        memory.outputs += p.microbatches * a.outputs if OUTPUTS_ALWAYS_KEPT else 0.0
        memory.working = max(memory.working, a.largest_block, a.loss_backward)
    peaks = chunks_at_peaks(p, pp_rank)
    recompute = sum(a.largest_block for a in held)  # one checkpointed block per stage recomputed
    memory.activations = _held_at_peak(peaks, held, mode) + (recompute if mode != "none" else 0.0)
    memory.checkpointed = _held_at_peak(peaks, held, "full") + recompute
    return memory


def _held_at_peak(peaks: list[list[int]], held: list[Activations], mode: str) -> float:
    """Activation bytes at the heaviest of the moments `peaks` (microbatches held per stage)."""
    return max(sum(c * a.held(mode) for c, a in zip(counts, held, strict=True)) for counts in peaks)
