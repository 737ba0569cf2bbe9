"""Every pipeline schedule mpcli accepts, in one table (`SPECS`), each row built on torch's own class.

A row (`ScheduleSpec`) holds what mpcli needs to know about one schedule: the YAML name, torch's name
for it (`torch.distributed.pipelining.schedules.get_schedule_class` resolves it), where its stages sit,
the fewest microbatches it runs, and what it costs (activations held, bubble). Whether a schedule drives
one stage per rank or several is asked of torch (`PipelineScheduleSingle` / `PipelineScheduleMulti`),
never listed here. Validation, the pipeline builder, `mpcli plan` (and `--suggest`) and `mpcli report`
all read this table; an unknown name is an error everywhere.

To add a schedule, add one row to `SPECS`: its name, torch's name, its placement, its microbatch rule,
and its in-flight and bubble models (reuse a function below or write one beside them). Nothing else
changes: the unit tests (torch class, placement) and the gloo parity run take every row of the table.

Placement, for pp ranks and v stages per rank: looped puts stages r, r + pp, r + 2 pp, ... on rank r;
V-shaped puts r and 2 pp - 1 - r on rank r (exactly 2 stages per rank), so the first and the last stage
share rank 0.

Activations held at the peak, counted in *chunks* (one microbatch through one of the rank's stages),
with M microbatches and r the rank's pipeline coordinate:

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

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mpcli.errors import ConfigError

if TYPE_CHECKING:  # torch is imported on first use: the config schema reads the names without it
    from torch.distributed.pipelining.schedules import _PipelineSchedule

Placement = Literal["looped", "v"]
# (pp, virtual stages per rank, microbatches, pp_rank) -> chunks held by each local stage, in stage order.
InFlight = Callable[[int, int, int, int], list[int]]
# The same, at each moment that can be the rank's activation peak.
Peaks = Callable[[int, int, int, int], list[list[int]]]
# (pp, virtual stages per rank, microbatches) -> idle share of a step, for pp > 1.
BubbleModel = Callable[[int, int, int], float]

# A V-shaped placement walks down the ranks and back up once: two stages per rank.
V_STAGES_PER_RANK = 2


def all_forwards_first(pp: int, v: int, m: int, r: int) -> list[int]:
    """gpipe, looped-bfs: every microbatch's forward of a stage before its backwards."""
    return [m] * v


def one_forward_one_backward(pp: int, v: int, m: int, r: int) -> list[int]:
    return [min(m, pp - r)]


def _interleaved(pp: int, v: int, m: int, r: int, *, hops: int) -> list[int]:
    total = min(v * m, (v - 1) * pp + hops * (pp - 1 - r) + 1)
    # Warm-up forward k runs on local stage (k // pp) % v: rounds of pp microbatches per stage.
    return [sum(1 for k in range(total) if (k // pp) % v == i) for i in range(v)]


def interleaved_1f1b_in_flight(pp: int, v: int, m: int, r: int) -> list[int]:
    return _interleaved(pp, v, m, r, hops=2)


def interleaved_zero_bubble_in_flight(pp: int, v: int, m: int, r: int) -> list[int]:
    return _interleaved(pp, v, m, r, hops=1)


def v_in_flight(pp: int, v: int, m: int, r: int) -> list[int]:
    """zbv, dualpipev: the most each of the rank's (down, up) stages holds."""
    return [min(m, 2 * pp - r), min(m, r + 1)]


def zbv_peaks(pp: int, v: int, m: int, r: int) -> list[list[int]]:
    """zbv's two stages peak one action apart; which moment weighs more depends on their sizes."""
    return [[min(m, 2 * pp - r), min(m, r)], [min(m, 2 * pp - r - 1), min(m, r + 1)]]


def textbook_bubble(pp: int, v: int, m: int) -> float:
    """Fill and drain of pp - 1 microbatch slots: (pp - 1) / (M + pp - 1)."""
    return (pp - 1) / (m + pp - 1)


def interleaved_bubble(pp: int, v: int, m: int) -> float:
    fill = (pp - 1) / v
    return fill / (m + fill)


def zero_bubble(pp: int, v: int, m: int) -> float:
    """Weight-gradient passes fill about two thirds of interleaved's fill and drain."""
    fill = (pp - 1) / v
    fill /= 3
    return fill / (m + fill)


@functools.cache
def _torch_class(torch_name: str) -> type[_PipelineSchedule]:
    from torch.distributed.pipelining.schedules import get_schedule_class

    return get_schedule_class(torch_name)


@dataclass(frozen=True)
class ScheduleSpec:
    """One pipeline schedule: torch's class, placement, microbatch rule and cost models."""

    name: str  # as spelled in YAML (parallel.schedule)
    torch_name: str  # what torch's get_schedule_class takes
    placement: Placement
    in_flight: InFlight
    bubble_model: BubbleModel
    peaks: Peaks | None = None  # None: the in-flight counts are the only peak
    # torch refuses fewer microbatches than stages (not just ranks) for this schedule.
    microbatches_per_stage: bool = False
    # torch splits the microbatches into rounds of pp and refuses a remainder.
    microbatches_multiple_of_pp: bool = False
    # torch's forward-only eval() cannot run this schedule; evaluation goes through step().
    eval_needs_backward: bool = False

    @property
    def torch_class(self) -> type[_PipelineSchedule]:
        return _torch_class(self.torch_name)

    @property
    def multi_stage(self) -> bool:
        """Whether torch's class drives a list of stages per rank (else exactly one)."""
        from torch.distributed.pipelining.schedules import PipelineScheduleMulti, PipelineScheduleSingle

        if issubclass(self.torch_class, PipelineScheduleMulti):
            return True
        if issubclass(self.torch_class, PipelineScheduleSingle):
            return False
        raise TypeError(f"{self.torch_class.__name__} is neither a single- nor a multi-stage schedule")

    @property
    def v_shaped(self) -> bool:
        return self.placement == "v"

    @property
    def virtual_stages(self) -> tuple[int, int | None]:
        """(fewest, most) stages per rank; None: no upper limit."""
        if self.v_shaped:
            return V_STAGES_PER_RANK, V_STAGES_PER_RANK
        return (2, None) if self.multi_stage else (1, 1)

    @property
    def has_textbook_bubble(self) -> bool:
        """Whether the bubble is the textbook fill and drain that a measured step can be held against."""
        return self.bubble_model is textbook_bubble

    def stage_ranks(self, pp: int, virtual: int) -> list[int]:
        """Pipeline rank holding each stage, in stage order."""
        if self.v_shaped:
            # Down the ranks on even passes, back up on odd ones: rank r holds r and 2 pp - 1 - r.
            return [s % pp if (s // pp) % 2 == 0 else pp - 1 - s % pp for s in range(pp * virtual)]
        return [s % pp for s in range(pp * virtual)]

    def stages_of_rank(self, pp: int, virtual: int, pp_rank: int) -> list[int]:
        return [s for s, rank in enumerate(self.stage_ranks(pp, virtual)) if rank == pp_rank]

    def min_microbatches(self, pp: int, virtual: int) -> int:
        """Fewest microbatches a step may have: one per rank (one per stage where torch demands it)."""
        return pp * virtual if self.microbatches_per_stage else pp

    def bubble(self, pp: int, virtual: int, microbatches: int) -> float:
        """Share of a step that a pipeline rank is idle (0 for pp = 1)."""
        return 0.0 if pp == 1 else self.bubble_model(pp, virtual, microbatches)

    def chunks_in_flight(self, pp: int, virtual: int, microbatches: int, pp_rank: int) -> list[int]:
        """The most microbatches each of the rank's stages (in stage order) holds at any moment."""
        return self.in_flight(pp, virtual, microbatches, pp_rank)

    def chunks_at_peaks(self, pp: int, virtual: int, microbatches: int, pp_rank: int) -> list[list[int]]:
        """Microbatches held by each of the rank's stages at each moment that can be its peak."""
        if self.peaks is None:
            return [self.in_flight(pp, virtual, microbatches, pp_rank)]
        return self.peaks(pp, virtual, microbatches, pp_rank)


SPECS: dict[str, ScheduleSpec] = {
    spec.name: spec
    for spec in (
        ScheduleSpec("gpipe", "GPipe", "looped", all_forwards_first, textbook_bubble),
        ScheduleSpec("1f1b", "1F1B", "looped", one_forward_one_backward, textbook_bubble),
        ScheduleSpec(
            "interleaved-1f1b", "Interleaved1F1B", "looped", interleaved_1f1b_in_flight, interleaved_bubble,
            microbatches_multiple_of_pp=True,
        ),
        ScheduleSpec("looped-bfs", "LoopedBFS", "looped", all_forwards_first, interleaved_bubble),
        ScheduleSpec(
            "interleaved-zero-bubble", "InterleavedZeroBubble", "looped", interleaved_zero_bubble_in_flight,
            zero_bubble, microbatches_multiple_of_pp=True,
        ),
        ScheduleSpec(
            "zbv", "ZBVZeroBubble", "v", v_in_flight, zero_bubble, peaks=zbv_peaks, eval_needs_backward=True
        ),
        ScheduleSpec(
            "dualpipev", "DualPipeV", "v", v_in_flight, zero_bubble,
            microbatches_per_stage=True, eval_needs_backward=True,
        ),
    )
}  # fmt: skip


def schedule_names() -> tuple[str, ...]:
    return tuple(SPECS)


def schedule_spec(name: str) -> ScheduleSpec:
    """The row for `name`; an unknown name is a user error naming the choices."""
    spec = SPECS.get(name)
    if spec is None:
        raise ConfigError(f"parallel.schedule={name}: must be one of {', '.join(SPECS)}")
    return spec
