"""What goes where, computed from the config alone (meta device, no processes)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from rich.table import Table

from mpcli.config.schema import RunConfig
from mpcli.config.validate import bf16_enabled, on_for_cuda, resolve_device
from mpcli.estimate.schedule import bubble_fraction
from mpcli.models import build_model
from mpcli.parallel.partition import balanced_split
from mpcli.parallel.pipeline import num_stages, split_blocks, stage_ranks

if TYPE_CHECKING:
    from mpcli.estimate.profile import ModelProfile

# Above this idle share the plan suggests more microbatches.
BUBBLE_HINT = 0.2


@dataclass
class StagePlan:
    stage: int
    pp_rank: int
    ranks: list[int]  # global ranks holding (a tp shard of) this stage, for every dp replica
    blocks: list[int]
    params: int  # parameters of the whole stage (before tensor-parallel sharding)


def with_split(run: RunConfig, cuda_devices: int) -> RunConfig:
    """`run` with `parallel.split` resolved from `parallel.balance` (so every worker uses the same)."""
    device = resolve_device(run.topology.device, cuda_devices)
    split = balanced_split(run, torch.device("cuda" if device == "cuda" else "cpu"))
    return replace(run, parallel=replace(run.parallel, split=split))


def stage_plan(run: RunConfig) -> list[StagePlan]:
    """Blocks and parameter count of every pipeline stage; ranks follow the ("pp", "dp", "tp") mesh."""
    p = run.parallel
    total = num_stages(p)
    plans = []
    for stage, (blocks, pp_rank) in enumerate(
        zip(split_blocks(run.model.n_blocks, total, p.split), stage_ranks(p), strict=True)
    ):
        model = build_model(run.model)
        model.keep_stage(blocks, first=stage == 0, last=stage == total - 1)
        params = sum(t.numel() for t in model.parameters())
        ranks = [(pp_rank * p.dp + d) * p.tp + t for d in range(p.dp) for t in range(p.tp)]
        plans.append(StagePlan(stage, pp_rank, ranks, blocks, params))
    return plans


def _span(blocks: list[int]) -> str:
    return f"{blocks[0]}–{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])


def _ranks(ranks: list[int]) -> str:
    return ",".join(map(str, ranks)) if len(ranks) <= 4 else f"{ranks[0]}…{ranks[-1]} ({len(ranks)})"


def plan_table(run: RunConfig) -> Table:
    p, m = run.parallel, run.model
    virtual = f" × {p.virtual_stages} virtual" if p.virtual_stages > 1 else ""
    title = (
        f"{m.family}-{m.size}: pp={p.pp}{virtual} × dp={p.dp} × tp={p.tp}, schedule {p.schedule}, "
        f"{p.microbatches} microbatches of {run.train.microbatch_size}, split by {p.balance}"
    )
    table = Table(title=title)
    for column in ("stage", "pp rank", "ranks", "blocks", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    model = build_model(m)
    total = num_stages(p)
    for s in stage_plan(run):
        first = [name for name in model.first_parts] if s.stage == 0 else []
        last = [name for name in model.last_parts] if s.stage == total - 1 else []
        blocks = " + ".join([*first, _span(s.blocks), *last])
        per_rank = f" ({s.params / p.tp / 1e6:,.2f} M per tp rank)" if p.tp > 1 else ""
        params = f"{s.params / 1e6:,.2f} M{per_rank}"
        table.add_row(str(s.stage), str(s.pp_rank), _ranks(s.ranks), blocks, params)
    table.caption = bubble_note(run)
    return table


def bubble_note(run: RunConfig) -> str | None:
    """The schedule's expected idle share per pipeline rank; when large, how many microbatches shrink it."""
    p = run.parallel
    if p.pp == 1:
        return None
    bubble = bubble_fraction(p)
    note = f"expected pipeline bubble {bubble:.0%} ({p.schedule}, {p.microbatches} microbatches)"
    if bubble <= BUBBLE_HINT:
        return note
    more = p.microbatches
    while bubble_fraction(replace(p, microbatches=more)) > BUBBLE_HINT / 2:
        more *= 2
    smaller = bubble_fraction(replace(p, microbatches=more))
    return f"{note}; parallel.microbatches={more} would make it {smaller:.0%}"


def speed_tip(
    run: RunConfig,
    cuda_devices: int,
    *,
    profile: ModelProfile | None = None,
    gpu_mem_gib: float | None = None,
) -> str | None:
    """For a GPU run, a split of the same global batch into microbatches that `mpcli plan`'s step model
    (fitted to GPU runs) rates at least 5% faster, with its peak memory (only splits that fit
    `gpu_mem_gib`, when given); None on CPU or when none is. `profile`: the model's, if already made."""
    if resolve_device(run.topology.device, cuda_devices) != "cuda":
        return None
    from mpcli.estimate.layout import CostModel
    from mpcli.estimate.profile import profile_model
    from mpcli.estimate.suggest import faster_microbatches
    from mpcli.estimate.tables import microbatch_hint

    if profile is None:
        try:
            profile = profile_model(run)
        except Exception:  # a bring-your-own model may not run on the meta device: no tip, still a run
            return None
    bf16, compiled = bf16_enabled(run.train.precision, "cuda"), on_for_cuda(run.train.compile, "cuda")
    faster = faster_microbatches(
        run, profile, cuda_devices=cuda_devices, cost=CostModel(), bf16=bf16, compiled=compiled,
        gpu_mem_gib=gpu_mem_gib,
    )  # fmt: skip
    if faster is None:
        return None
    fits = "" if gpu_mem_gib is not None else " (`mpcli plan ... --gpu-mem N` checks that it fits)"
    return f"tip: {microbatch_hint(*faster)}{fits}"
