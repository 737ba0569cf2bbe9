"""Communication of one rank per training step, in bytes it sends (ring collectives).

A ring all-reduce of n bytes over g ranks sends 2 (g - 1) / g x n bytes per rank; an all-gather or a
reduce-scatter (g - 1) / g x n.

- p2p: each stage sends its output forward and the gradient of its input backward, once per
  microbatch (float32: the residual stream stays float32 under autocast; sharded over tp under
  sequence parallel). Neighbouring stages on the same rank (the turn of a V schedule) send nothing.
- tp: per microbatch, a Megatron pair (column-wise then row-wise Linear) all-reduces the row-wise
  output in the forward and the column-wise input gradient in the backward: two all-reduces of the
  row-wise output's size (in the autocast dtype). Sequence parallel replaces each all-reduce by an
  all-gather + reduce-scatter: the same bytes. A vocabulary-sharded embedding all-reduces its float32
  output; the head all-reduces its input gradient and, without loss_parallel, all-gathers the logits.
  Collectives issued (tp_calls, for the host-time term of the step model): a Megatron pair issues 2
  per microbatch (4 under sequence parallel), each embedding table 1 (2), the head 1 (2), plus 1 for the
  logits' gather without loss_parallel.
- fsdp (dp > 1): with several microbatches apply_dp keeps parameters gathered between forward and
  backward and the pipeline schedule keeps them through its backwards, so each is all-gathered once
  per step; with one microbatch blocks are resharded after the forward and gathered again for the
  backward. Gathers move bf16 under autocast (FSDP2's mixed-precision policy); the float32 gradients
  are reduce-scattered once per step.
- tied: with a tied embedding on different first/last pipeline ranks, both all-reduce its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpcli.config.schema import RunConfig
from mpcli.estimate.profile import ModelProfile
from mpcli.estimate.stages import Stage, tp_styles
from mpcli.models import family_spec
from mpcli.parallel.pipeline import loss_parallel_enabled

FP32 = 4


@dataclass
class CommVolume:
    p2p: float = 0.0
    tp: float = 0.0
    fsdp: float = 0.0
    tied: float = 0.0
    tp_calls: float = 0.0  # tensor-parallel collectives issued per step

    @property
    def total(self) -> float:
        return self.p2p + self.tp + self.fsdp + self.tied


def all_reduce(n: float, group: int) -> float:
    return 2 * (group - 1) / group * n


def all_gather(n: float, group: int) -> float:
    return (group - 1) / group * n


def _p2p(run: RunConfig, stages: list[Stage], stage: Stage, microbatch_size: int) -> float:
    p = run.parallel
    scale = microbatch_size * p.microbatches * FP32 / (p.tp if p.sequence_parallel and p.tp > 1 else 1)
    sent = 0.0
    if not stage.last and stages[stage.index + 1].pp_rank != stage.pp_rank:
        sent += stage.parts[-1].out_numel * scale
    if not stage.first and stages[stage.index - 1].pp_rank != stage.pp_rank:
        sent += stage.parts[0].in_numel * scale
    return sent


def _tp(
    run: RunConfig, stage: Stage, styles: dict[str, str], *, microbatch_size: int, bf16: bool
) -> tuple[float, float]:
    """(bytes sent, collectives issued) per step for the stage's tensor-parallel modules."""
    p = run.parallel
    if p.tp == 1:
        return 0.0, 0.0
    e = 2 if bf16 else FP32
    sharded = loss_parallel_enabled(p, run.model)
    per_call = 2 if p.sequence_parallel else 1  # an all-reduce becomes an all-gather + reduce-scatter
    size = calls = 0.0  # all-reduced elements x bytes per sample; collectives per microbatch
    for part in stage.parts:
        for name, (n_in, n_out) in part.io.items():
            style = styles.get(name)
            if style == "rowwise":
                size += 2 * n_out * e
                calls += 2 * per_call
            elif style == "embedding":
                size += n_out * FP32
                calls += per_call
            elif style == "head":
                size += n_in * e + (0 if sharded else n_out * e / 2)  # all-gather: half
                calls += per_call + (0 if sharded else 1)
    return all_reduce(size * microbatch_size * p.microbatches, p.tp), calls * p.microbatches


def _fsdp(run: RunConfig, stage: Stage, *, bf16: bool) -> float:
    p = run.parallel
    if p.dp == 1:
        return 0.0
    block_params = {q.ident for part in stage.parts if part.name.startswith("block") for q in part.params}
    blocks = sum(q.tp_numel for q in stage.params if q.info.ident in block_params)
    total = sum(q.tp_numel for q in stage.params)
    gathered = (total + (blocks if p.microbatches == 1 else 0)) * (2 if bf16 else FP32)
    return all_gather(gathered, p.dp) + all_gather(total * FP32, p.dp)


def _tied(run: RunConfig, stages: list[Stage], stage: Stage) -> float:
    tied = family_spec(run.model.family).ties_embeddings and run.model.tie_embeddings
    if not tied or not (stage.first or stage.last) or stages[0].pp_rank == stages[-1].pp_rank:
        return 0.0
    local_vocab = -(-run.model.vocab // run.parallel.tp)
    return all_reduce(local_vocab * run.model.d_model * FP32, 2)


def rank_comm(
    run: RunConfig, profile: ModelProfile, stages: list[Stage], pp_rank: int, *, microbatch_size: int,
    bf16: bool,
) -> CommVolume:  # fmt: skip
    """Bytes one rank at pipeline coordinate `pp_rank` sends per step."""
    styles = tp_styles(run, profile)
    volume = CommVolume()
    for stage in (s for s in stages if s.pp_rank == pp_rank):
        volume.p2p += _p2p(run, stages, stage, microbatch_size)
        tp_bytes, tp_calls = _tp(run, stage, styles, microbatch_size=microbatch_size, bf16=bf16)
        volume.tp += tp_bytes
        volume.tp_calls += tp_calls
        volume.fsdp += _fsdp(run, stage, bf16=bf16)
        volume.tied += _tied(run, stages, stage)
    return volume
