"""One pipeline step across ranks, from the recorded timelines: who computes when, and the bubble."""

from __future__ import annotations

from dataclasses import dataclass

from mpcli.config.schema import RunConfig
from mpcli.parallel.schedules import schedule_spec
from mpcli.report.data import RankTimeline
from mpcli.train.timeline import Interval


@dataclass
class RankRow:
    rank: int
    stages: list[int]
    intervals: list[Interval]
    idle: float  # fraction of the step's pipeline span this rank spends neither forward nor backward


@dataclass
class PipelineStep:
    step: int
    start: float  # first forward of any rank (seconds since the step's barrier)
    end: float  # last backward of any rank
    rows: list[RankRow]

    @property
    def span(self) -> float:
        return self.end - self.start

    @property
    def bubble(self) -> float:
        """Mean idle fraction over the ranks."""
        return sum(r.idle for r in self.rows) / len(self.rows)


def _busy(intervals: list[Interval]) -> float:
    """Time covered by the intervals (they do not overlap on one rank, but be safe)."""
    total, reach = 0.0, float("-inf")
    for i in sorted(intervals, key=lambda i: i.start):
        start = max(i.start, reach)
        if i.end > start:
            total += i.end - start
            reach = i.end
    return total


def pipeline_step(timelines: list[RankTimeline]) -> PipelineStep | None:
    """The last step recorded by every rank, or None when there is none."""
    common = set.intersection(*({s.step for s in t.steps} for t in timelines)) if timelines else set()
    if not common:
        return None
    step = max(common)
    records = {t.rank: next(s for s in t.steps if s.step == step) for t in timelines}
    everything = [i for record in records.values() for i in record.intervals]
    start = min((i.start for i in everything), default=0.0)
    end = max((i.end for i in everything), default=0.0)
    if end <= start:
        return None
    rows = []
    for t in timelines:
        intervals = records[t.rank].intervals
        rows.append(RankRow(t.rank, t.stages, intervals, 1 - _busy(intervals) / (end - start)))
    return PipelineStep(step, start, end, rows)


def textbook_bubble(run: RunConfig | None) -> float | None:
    """(pp - 1) / (microbatches + pp - 1) for GPipe and 1F1B, the fraction a schedule leaves idle; None
    for schedules whose bubble has another form. An unknown schedule is a user error."""
    if run is None:
        return None
    p = run.parallel
    spec = schedule_spec(p.schedule)
    return spec.bubble(p.pp, p.virtual_stages, p.microbatches) if spec.has_textbook_bubble else None
