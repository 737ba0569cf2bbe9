"""Checks of the model and its parallel layout (pp x dp x tp, schedule, split, tensor-parallel plan)."""

from __future__ import annotations

from mpcli.config import schema
from mpcli.config.schema import ParallelConfig, RunConfig
from mpcli.errors import ConfigError
from mpcli.parallel.schedules import SPECS, ScheduleSpec, schedule_spec


def one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value}: must be one of {', '.join(allowed)}")


def positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{key}={value}: must be {'>= 0' if zero_ok else '> 0'}")


def _blocks_key(run: RunConfig) -> str:
    return "len(model.blocks)" if run.model.blocks else "model.n_layer"


def check_model(run: RunConfig) -> None:
    from mpcli.models import family_spec  # torch: only when a config is checked

    spec = family_spec(run.model.family)
    spec.check(run.model)
    if spec.data and run.data.name not in spec.data:
        raise ConfigError(
            f"data.name={run.data.name}: model.family={spec.name} trains on {' or '.join(spec.data)}"
        )


def _check_virtual_stages(p: ParallelConfig, spec: ScheduleSpec) -> None:
    positive("parallel.virtual_stages", p.virtual_stages)
    fewest, most = spec.virtual_stages
    if most == 1 and p.virtual_stages != 1:
        multi = [s.name for s in SPECS.values() if s.virtual_stages[1] != 1]
        raise ConfigError(
            f"parallel.virtual_stages={p.virtual_stages}: schedule {p.schedule} runs one stage per rank; "
            f"use one of {', '.join(multi)}"
        )
    if fewest == most and p.virtual_stages != most:
        raise ConfigError(
            f"parallel.virtual_stages={p.virtual_stages}: schedule {p.schedule} needs exactly {most}"
        )
    if p.virtual_stages < fewest:
        raise ConfigError(
            f"parallel.virtual_stages={p.virtual_stages}: schedule {p.schedule} interleaves several stages "
            f"per rank; set parallel.virtual_stages={fewest} (or more), or use 1f1b"
        )


def _check_schedule(run: RunConfig) -> None:
    p = run.parallel
    spec = schedule_spec(p.schedule)
    _check_virtual_stages(p, spec)
    stages = p.pp * p.virtual_stages
    if stages > run.model.n_blocks:
        raise ConfigError(
            f"parallel.pp={p.pp}: more pipeline stages ({stages}) than blocks "
            f"({_blocks_key(run)}={run.model.n_blocks}); lower pp or parallel.virtual_stages"
        )
    if p.pp > 1 and p.microbatches < p.pp:
        raise ConfigError(
            f"parallel.microbatches={p.microbatches}: needs at least one microbatch per stage (pp={p.pp})"
        )
    least = spec.min_microbatches(p.pp, p.virtual_stages)
    if p.microbatches < least:  # only where torch wants one per stage: one per rank is checked above
        raise ConfigError(
            f"parallel.microbatches={p.microbatches}: {p.schedule} needs at least one microbatch per stage "
            f"({stages} stages: pp={p.pp} x {p.virtual_stages}); use parallel.microbatches={least} or more"
        )
    if spec.microbatches_multiple_of_pp and p.microbatches % p.pp:
        raise ConfigError(
            f"parallel.microbatches={p.microbatches}: {p.schedule} needs a multiple of pp={p.pp}"
        )


def _check_split(run: RunConfig) -> None:
    p, blocks, stages = run.parallel, run.model.n_blocks, run.parallel.pp * run.parallel.virtual_stages
    one_of("parallel.balance", p.balance, schema.BALANCE_MODES)
    if p.split is None:
        return
    if len(p.split) != stages:
        raise ConfigError(f"parallel.split={p.split}: needs one block count per stage ({stages} stages)")
    if any(n <= 0 for n in p.split):
        raise ConfigError(f"parallel.split={p.split}: every stage needs at least one block")
    if sum(p.split) != blocks:
        verb = "drops" if sum(p.split) < blocks else "repeats"
        raise ConfigError(
            f"parallel.split={p.split}: {verb} blocks; the counts must add up to {_blocks_key(run)}={blocks}"
        )


def _check_tp(run: RunConfig) -> None:
    from mpcli.models import family_spec

    p, m = run.parallel, run.model
    spec = family_spec(m.family)
    for pattern, style in p.tp_plan.items():
        one_of(f"parallel.tp_plan.{pattern}", style, schema.TP_STYLES)
    if p.sequence_parallel and not spec.tokens:
        raise ConfigError(
            f"parallel.sequence_parallel: model.family={m.family} has no sequence dimension; "
            "set parallel.sequence_parallel=false"
        )
    if p.tp == 1:
        return
    if spec.no_tp:
        raise ConfigError(f"parallel.tp: {spec.no_tp}")
    if spec.user_code and not p.tp_plan:
        raise ConfigError(
            f"parallel.tp_plan: a {m.family} model needs a plan (module pattern: style) for tp > 1"
        )
    for key, value in spec.tp_divisible(m, p.sequence_parallel):
        if value % p.tp:
            raise ConfigError(f"{key}={value}: must be divisible by parallel.tp={p.tp}")


def check_parallel(run: RunConfig) -> None:
    p = run.parallel
    for key in ("pp", "tp", "dp", "microbatches"):
        positive(f"parallel.{key}", getattr(p, key))
    _check_schedule(run)
    _check_split(run)
    _check_tp(run)
