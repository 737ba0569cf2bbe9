"""What goes where, computed from the config alone (meta device, no processes)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from mpcli.config.schema import RunConfig
from mpcli.models import build_model
from mpcli.parallel.pipeline import split_blocks


@dataclass
class StagePlan:
    stage: int
    ranks: list[int]  # global ranks holding this stage (one per dp replica)
    blocks: list[int]
    params: int


def stage_plan(run: RunConfig) -> list[StagePlan]:
    """Blocks and parameter count of every pipeline stage; ranks follow the ("pp", "dp") mesh."""
    p = run.parallel
    plans = []
    for stage, blocks in enumerate(split_blocks(run.model.n_layer, p.pp, p.split)):
        model = build_model(run.model)
        model.keep_stage(blocks, first=stage == 0, last=stage == p.pp - 1)
        params = sum(t.numel() for t in model.parameters())
        plans.append(StagePlan(stage, [stage * p.dp + d for d in range(p.dp)], blocks, params))
    return plans


def _span(blocks: list[int]) -> str:
    return f"{blocks[0]}–{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])


def plan_table(run: RunConfig) -> Table:
    p = run.parallel
    title = (
        f"{run.model.family}-{run.model.size}: pp={p.pp} × dp={p.dp}, schedule {p.schedule}, "
        f"{p.microbatches} microbatches of {run.train.microbatch_size}"
    )
    table = Table(title=title)
    for column in ("stage", "ranks", "blocks", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for s in stage_plan(run):
        extras = [name for name, on in (("embed", s.stage == 0), ("head", s.stage == p.pp - 1)) if on]
        blocks = _span(s.blocks) + (f" + {' + '.join(extras)}" if extras else "")
        table.add_row(str(s.stage), ",".join(map(str, s.ranks)), blocks, f"{s.params / 1e6:,.2f} M")
    return table
