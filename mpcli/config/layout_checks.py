"""Checks of the model and its parallel layout (pp x dp x tp, schedule, split, tensor-parallel plan)."""

from __future__ import annotations

from mpcli.config import schema
from mpcli.config.schema import RunConfig
from mpcli.errors import ConfigError

# The data sets each family can train on (custom models take any).
FAMILY_DATA = {"gpt2": ("bytes-corpus", "tokens"), "mlp": ("synthetic",), "cnn": ("shapes",)}


def one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value}: must be one of {', '.join(allowed)}")


def positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{key}={value}: must be {'>= 0' if zero_ok else '> 0'}")


def _blocks_key(run: RunConfig) -> str:
    return "len(model.blocks)" if run.model.family == "custom" else "model.n_layer"


def check_model(run: RunConfig) -> None:
    m = run.model
    one_of("model.family", m.family, schema.MODEL_FAMILIES)
    if m.family == "custom":
        if not m._target_:
            raise ConfigError("model._target_: required for model.family=custom (pkg.module.factory)")
        if not m.blocks:
            raise ConfigError("model.blocks: list the submodules that, chained, compute the forward")
        one_of("model.loss", m.loss, ("cross_entropy", "mse"))
        return
    for key in ("n_layer", "n_head", "d_model", "seq_len", "vocab", "n_classes", "in_features", "channels"):
        positive(f"model.{key}", getattr(m, key))
    if m.family == "gpt2" and m.d_model % m.n_head:
        raise ConfigError(f"model.d_model={m.d_model}: must be divisible by model.n_head={m.n_head}")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout={m.dropout}: must be in [0, 1)")
    if run.data.name not in FAMILY_DATA[m.family]:
        raise ConfigError(
            f"data.name={run.data.name}: model.family={m.family} trains on "
            f"{' or '.join(FAMILY_DATA[m.family])}"
        )


def _check_schedule(run: RunConfig) -> None:
    p = run.parallel
    one_of("parallel.schedule", p.schedule, schema.SCHEDULES)
    positive("parallel.virtual_stages", p.virtual_stages)
    if p.schedule in schema.SINGLE_STAGE_SCHEDULES and p.virtual_stages != 1:
        raise ConfigError(
            f"parallel.virtual_stages={p.virtual_stages}: schedule {p.schedule} runs one stage per rank; "
            f"use one of {', '.join(schema.MULTI_STAGE_SCHEDULES)}"
        )
    if p.schedule in schema.V_SCHEDULES and p.virtual_stages != 2:
        raise ConfigError(
            f"parallel.virtual_stages={p.virtual_stages}: schedule {p.schedule} needs exactly 2"
        )
    if p.schedule in schema.MULTI_STAGE_SCHEDULES and p.virtual_stages < 2:
        raise ConfigError(
            f"parallel.virtual_stages=1: schedule {p.schedule} interleaves several stages per rank; "
            "set parallel.virtual_stages=2 (or more), or use 1f1b"
        )
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
    if p.schedule == "dualpipev" and p.microbatches < stages:
        raise ConfigError(
            f"parallel.microbatches={p.microbatches}: dualpipev needs at least one microbatch per stage "
            f"({stages} stages: pp={p.pp} x 2); use parallel.microbatches={stages} or more"
        )
    if p.schedule in ("interleaved-1f1b", "interleaved-zero-bubble") and p.microbatches % p.pp:
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
    p, m = run.parallel, run.model
    for pattern, style in p.tp_plan.items():
        one_of(f"parallel.tp_plan.{pattern}", style, schema.TP_STYLES)
    if p.sequence_parallel and m.family != "gpt2":
        raise ConfigError(
            f"parallel.sequence_parallel: only gpt2 has a sequence dimension, not model.family={m.family}"
        )
    if p.tp == 1:
        return
    if m.family == "cnn":
        raise ConfigError(
            "parallel.tp: the cnn family has no tensor-parallel plan (its small convolutions would spend "
            "more on per-layer all-reduces than they save); use parallel.pp or parallel.dp"
        )
    if m.family == "custom" and not p.tp_plan:
        raise ConfigError("parallel.tp_plan: a custom model needs a plan (module pattern: style) for tp > 1")
    divisible = {
        "gpt2": [("model.n_head", m.n_head), ("model.vocab", m.vocab)],
        "mlp": [("model.d_model", m.d_model)],
    }
    if p.sequence_parallel:
        divisible["gpt2"].append(("model.seq_len", m.seq_len))
    for key, value in divisible.get(m.family, []):
        if value % p.tp:
            raise ConfigError(f"{key}={value}: must be divisible by parallel.tp={p.tp}")


def check_parallel(run: RunConfig) -> None:
    p = run.parallel
    for key in ("pp", "tp", "dp", "microbatches"):
        positive(f"parallel.{key}", getattr(p, key))
    _check_schedule(run)
    _check_split(run)
    _check_tp(run)
