"""What a pipeline schedule costs, for a parallel config: activations held at the peak and the bubble.

The models themselves are rows of the schedule table (mpcli/parallel/schedules.py, which explains
them); these read a `ParallelConfig` and ask its schedule's row, so an unknown schedule is an error.
"""

from __future__ import annotations

from mpcli.config.schema import ParallelConfig
from mpcli.parallel.schedules import schedule_spec


def chunks_in_flight(parallel: ParallelConfig, pp_rank: int) -> list[int]:
    """The most microbatches each of the rank's stages (in stage order) holds at any moment."""
    p = parallel
    return schedule_spec(p.schedule).chunks_in_flight(p.pp, p.virtual_stages, p.microbatches, pp_rank)


def chunks_at_peaks(parallel: ParallelConfig, pp_rank: int) -> list[list[int]]:
    """Microbatches held by each of the rank's stages at each moment that can be the rank's activation
    peak. Usually one; zbv's two stages peak one action apart, and which moment weighs more depends
    on the stages' activation sizes."""
    p = parallel
    return schedule_spec(p.schedule).chunks_at_peaks(p.pp, p.virtual_stages, p.microbatches, pp_rank)


def bubble_fraction(parallel: ParallelConfig) -> float:
    """Share of a step that a pipeline rank is idle (0 for pp = 1)."""
    p = parallel
    return schedule_spec(p.schedule).bubble(p.pp, p.virtual_stages, p.microbatches)
