"""`mpcli plan --suggest`: layouts that fit the given GPUs, best estimated throughput first.

Candidates use every GPU (pp x tp x dp = GPUs per node x nodes) and keep the config's global batch
(microbatch_size x microbatches x dp sequences): for each degree split, each schedule (multi-stage
ones with 2 stages per rank) and each microbatch count M >= pp that divides the batch of one data
parallel replica, the microbatch size is the rest. Tensor parallel layouts turn sequence parallelism on
for GPT-2 when the sequence divides (it saves activation memory for the same communication).
Every candidate goes through the same checks as `mpcli train` (validate), so tp is only tried where the
family and its heads allow. A candidate fits when its busiest rank's peak is at most
`CostModel.headroom` x `--gpu-mem`; fitting candidates are ranked by the step-time model (layout.py).

`faster_microbatches` does the same for one layout: other splits of its global batch into microbatches,
for `mpcli plan`'s hint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from mpcli.config.schema import RunConfig
from mpcli.config.validate import validate
from mpcli.errors import ConfigError
from mpcli.estimate.layout import CostModel, LayoutEstimate, estimate
from mpcli.estimate.profile import ModelProfile
from mpcli.models import family_spec, task_of
from mpcli.parallel.schedules import SPECS

GiB = 2**30


@dataclass
class Suggestion:
    estimate: LayoutEstimate
    step_time: float
    tokens_per_s: float

    @property
    def run(self) -> RunConfig:
        return self.estimate.run


def rate(run: RunConfig, profile: ModelProfile, *, cost: CostModel, bf16: bool, compiled: bool) -> Suggestion:
    """`run`'s layout with its estimated step time and tokens/s."""
    layout = estimate(run, profile, bf16=bf16, compiled=compiled)
    step = layout.step_time(cost)
    return Suggestion(layout, step, layout.samples_per_step() * task_of(run.model).tokens_per_sample / step)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _schedules(pp: int) -> list[tuple[str, int]]:
    """(schedule, stages per rank) worth trying at this pipeline degree: every schedule with its fewest
    stages per rank (without a pipeline they all run the same one stage)."""
    if pp == 1:
        return [("1f1b", 1)]
    return [(name, spec.virtual_stages[0]) for name, spec in SPECS.items()]


def candidates(run: RunConfig, world: int) -> Iterator[RunConfig]:
    """Every layout of `world` ranks keeping `run`'s global batch (not yet validated)."""
    p, t = run.parallel, run.train
    global_batch = t.microbatch_size * p.microbatches * p.dp
    for tp in divisors(world):
        for pp in divisors(world // tp):
            dp = world // (tp * pp)
            if global_batch % dp:
                continue
            for schedule, virtual in _schedules(pp):
                for m in (m for m in divisors(global_batch // dp) if m >= pp or pp == 1):
                    parallel = replace(
                        p, pp=pp, tp=tp, dp=dp, schedule=schedule, virtual_stages=virtual, microbatches=m,
                        split=None, sequence_parallel=tp > 1 and family_spec(run.model.family).tokens
                        and run.model.seq_len % tp == 0,
                    )  # fmt: skip
                    train = replace(t, microbatch_size=global_batch // (dp * m))
                    yield replace(run, parallel=parallel, train=train)


def suggest(
    run: RunConfig,
    profile: ModelProfile,
    *,
    gpus: int,
    gpu_mem_gib: float,
    cost: CostModel,
    bf16: bool,
    compiled: bool = False,
) -> tuple[list[Suggestion], int, int]:
    """(fitting layouts best first, candidates rejected by validation, candidates that do not fit)."""
    world = gpus * run.topology.nnodes
    topology = replace(run.topology, nproc_per_node=None)
    fits, invalid, too_big = [], 0, 0
    for candidate in candidates(replace(run, topology=topology), world):
        try:
            validate(candidate, cuda_devices=gpus)
        except ConfigError:
            invalid += 1
            continue
        option = rate(candidate, profile, cost=cost, bf16=bf16, compiled=compiled)
        if option.estimate.peak > cost.headroom * gpu_mem_gib * GiB:
            too_big += 1
            continue
        fits.append(option)
    fits.sort(key=lambda s: (-s.tokens_per_s, s.estimate.peak))
    return fits, invalid, too_big


def faster_microbatches(
    run: RunConfig,
    profile: ModelProfile,
    *,
    cuda_devices: int,
    cost: CostModel,
    bf16: bool,
    compiled: bool = False,
    gpu_mem_gib: float | None = None,
    min_gain: float = 0.05,
) -> tuple[Suggestion, Suggestion] | None:
    """(this layout, the same layout split into other microbatches) where another split of the same
    global batch is estimated at least `min_gain` faster (and fits `gpu_mem_gib` when given): fewer,
    larger microbatches pay the fixed cost of a stage pass and of a tensor-parallel collective fewer
    times, more microbatches shrink the bubble."""
    p, t = run.parallel, run.train
    replica_batch = t.microbatch_size * p.microbatches
    now, best = rate(run, profile, cost=cost, bf16=bf16, compiled=compiled), None
    for m in divisors(replica_batch):
        if m == p.microbatches:
            continue
        candidate = replace(
            run, parallel=replace(p, microbatches=m), train=replace(t, microbatch_size=replica_batch // m)
        )
        try:
            validate(candidate, cuda_devices=cuda_devices)
        except ConfigError:
            continue
        option = rate(candidate, profile, cost=cost, bf16=bf16, compiled=compiled)
        if gpu_mem_gib is not None and option.estimate.peak > cost.headroom * gpu_mem_gib * GiB:
            continue
        if best is None or option.tokens_per_s > best.tokens_per_s:
            best = option
    if best is None or best.tokens_per_s < now.tokens_per_s * (1 + min_gain):
        return None
    return now, best
