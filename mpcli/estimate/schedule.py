"""What a pipeline schedule costs: the activations a rank holds at its peak, and the idle share (bubble).

Activations held at the peak, counted in *chunks* (one microbatch through one of the rank's stages),
with pp ranks, v stages per rank, M microbatches and r the rank's pipeline coordinate:

- gpipe: every forward runs before the first backward: M chunks.
- 1f1b (torch's Schedule1F1B): stage r runs min(M, pp - r) forwards before its first backward and then
  alternates, so it holds min(M, pp - r) chunks.
- interleaved-1f1b (ScheduleInterleaved1F1B): torch's warm-up is (v - 1) pp + 2 (pp - 1 - r) forwards
  (for M a multiple of pp); one more forward before the first backward: that + 1 chunks, at most v M.
- interleaved-zero-bubble (ScheduleInterleavedZeroBubble): the same with one step per hop,
  (v - 1) pp + (pp - 1 - r) + 1 chunks. Its weight-gradient passes (W) run later than the input
  gradients (I); the tensors they keep are the inputs of the Linear layers, a part of each chunk's
  activations that the chunk count already includes, so nothing is added.
- looped-bfs (ScheduleLoopedBFS): all forwards of each local stage, then the backwards: v M chunks.
- zbv (ScheduleZBVZeroBubble): the rank's first (down) stage peaks at min(M, 2 pp - r) chunks, its
  second (up) stage at min(M, r + 1), but not at once: the rank holds either min(M, 2 pp - r) +
  min(M, r) or min(M, 2 pp - r - 1) + min(M, r + 1), whichever weighs more (a unit test checks this
  against torch's own action order).
- dualpipev (ScheduleDualPipeV, M >= 2 pp): min(M, 2 pp - r) down and min(M, r + 1) up, at the same
  moment (counting an overlapped forward + backward pair forward first; tested against torch's order).

Bubble (the share of a step a rank waits), with b0 = (pp - 1) / (M + pp - 1):

- gpipe, 1f1b: b0 (fill and drain of pp - 1 microbatch slots).
- interleaved-1f1b, looped-bfs: the fill and drain shrink by v: ((pp - 1) / v) / (M + (pp - 1) / v).
- interleaved-zero-bubble, zbv, dualpipev: W passes fill most of the fill/drain slots. With forward,
  input-gradient and weight-gradient passes taking equal time (the zero-bubble paper's assumption) the
  remaining idle time is about a third of the schedule without the split (ZB-H1: (pp - 1)(F + B - 2W)
  against (pp - 1)(F + B + W)): a third of interleaved's bubble with v = 2.
"""

from __future__ import annotations

from mpcli.config.schema import ParallelConfig

ZERO_BUBBLE = ("interleaved-zero-bubble", "zbv", "dualpipev")


def chunks_in_flight(parallel: ParallelConfig, pp_rank: int) -> list[int]:
    """The most microbatches each of the rank's stages (in stage order) holds at any moment."""
    pp, v, m, r = parallel.pp, parallel.virtual_stages, parallel.microbatches, pp_rank
    schedule = parallel.schedule
    if schedule == "gpipe" or schedule == "looped-bfs":
        return [m] * v
    if schedule == "1f1b":
        return [min(m, pp - r)]
    if schedule in ("zbv", "dualpipev"):
        return [min(m, 2 * pp - r), min(m, r + 1)]
    hops = 2 if schedule == "interleaved-1f1b" else 1
    total = min(v * m, (v - 1) * pp + hops * (pp - 1 - r) + 1)
    # Warm-up forward k runs on local stage (k // pp) % v: rounds of pp microbatches per stage.
    return [sum(1 for k in range(total) if (k // pp) % v == i) for i in range(v)]


def chunks_at_peaks(parallel: ParallelConfig, pp_rank: int) -> list[list[int]]:
    """Microbatches held by each of the rank's stages at each moment that can be the rank's activation
    peak. Usually one; zbv's two stages peak one action apart, and which moment weighs more depends
    on the stages' activation sizes."""
    pp, m, r = parallel.pp, parallel.microbatches, pp_rank
    if parallel.schedule == "zbv":
        return [[min(m, 2 * pp - r), min(m, r)], [min(m, 2 * pp - r - 1), min(m, r + 1)]]
    return [chunks_in_flight(parallel, pp_rank)]


def bubble_fraction(parallel: ParallelConfig) -> float:
    """Share of a step that a pipeline rank is idle (0 for pp = 1)."""
    pp, v, m = parallel.pp, parallel.virtual_stages, parallel.microbatches
    if pp == 1:
        return 0.0
    if parallel.schedule in ("gpipe", "1f1b"):
        return (pp - 1) / (m + pp - 1)
    fill = (pp - 1) / v
    if parallel.schedule in ZERO_BUBBLE:
        fill /= 3
    return fill / (m + fill)
