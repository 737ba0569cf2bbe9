"""Rich tables of a plan: mesh, stages, memory per rank, schedule and communication, suggestions."""

from __future__ import annotations

from rich.table import Table

from mpcli.estimate.layout import CostModel, LayoutEstimate
from mpcli.estimate.memory import RankMemory
from mpcli.estimate.schedule import chunks_in_flight
from mpcli.estimate.stages import Stage
from mpcli.estimate.suggest import Suggestion
from mpcli.models.base import StagedModel

GiB, MiB = 2**30, 2**20
MAX_MESH_ROWS = 64


def gib(n: float) -> str:
    return f"{n / GiB:,.2f}" if n > 0 else "–"


def mib(n: float) -> str:
    return f"{n / MiB:,.1f}" if n > 0 else "–"


def _table(title: str, columns: list[str], right: int) -> Table:
    """A table whose columns from index `right` on are right-aligned numbers."""
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i >= right else "left")
    return table


def mesh_table(layout: LayoutEstimate) -> Table:
    """Which global rank has which (pp, dp, tp) coordinate, on which node."""
    run = layout.run
    p, per_node = run.parallel, layout.world // run.topology.nnodes
    title = f"mesh: pp={p.pp} × dp={p.dp} × tp={p.tp} on {run.topology.nnodes} node(s) × {per_node} processes"
    table = _table(title, ["rank", "node", "local rank", "pp", "dp", "tp", "stages"], 0)
    stages = {r: [s.index for s in layout.stages if s.pp_rank == r] for r in range(p.pp)}
    for rank in range(min(layout.world, MAX_MESH_ROWS)):
        pp, dp, tp = rank // (p.dp * p.tp), rank // p.tp % p.dp, rank % p.tp
        row = (rank, rank // per_node, rank % per_node, pp, dp, tp, ",".join(map(str, stages[pp])))
        table.add_row(*map(str, row))
    if layout.world > MAX_MESH_ROWS:
        table.caption = f"the first {MAX_MESH_ROWS} of {layout.world} ranks; rank = (pp · DP + dp) · TP + tp"
    return table


def _blocks_label(stage: Stage, model: StagedModel) -> str:
    span = f"{stage.blocks[0]}–{stage.blocks[-1]}" if len(stage.blocks) > 1 else str(stage.blocks[0])
    first = [n for n in model.first_parts if getattr(model, n) is not None] if stage.first else []
    last = [n for n in model.last_parts if getattr(model, n) is not None] if stage.last else []
    return " + ".join([*first, span, *last])


def stage_table(layout: LayoutEstimate, model: StagedModel) -> Table:
    p, mbs = layout.run.parallel, layout.microbatch_size
    columns = ["stage", "pp rank", "blocks", "params (M)", "per tp rank", "GFLOP / microbatch", "share"]
    title = (f"stages: split {[len(s.blocks) for s in layout.stages]} by {p.balance}; FLOPs imbalance "
             f"(max / mean) {layout.imbalance:.2f}")  # fmt: skip
    table = _table(title, columns, 3)
    top = max(s.flops for s in layout.stages) or 1.0
    for s in layout.stages:
        local = sum(q.tp_numel for q in s.params)
        table.add_row(
            str(s.index), str(s.pp_rank), _blocks_label(s, model), f"{s.n_params / 1e6:,.2f}",
            f"{local / 1e6:,.2f}", f"{s.flops * mbs / p.tp / 1e9:,.1f}", f"{s.flops / top:.0%}",
        )  # fmt: skip
    return table


def memory_table(layout: LayoutEstimate, gpu_mem_gib: float | None) -> Table:
    p = layout.run.parallel
    precision = "bf16 autocast, fp32 weights" if layout.bf16 else "fp32"
    columns = ["pp rank", "params", "grads", "optim.", "FSDP", "bf16", "activ.", "outputs", "working",
               "peak", "w/ AC"]  # fmt: skip
    columns += ["fits"] if gpu_mem_gib is not None else []
    ac = layout.run.train.activation_checkpointing
    title = (f"memory per rank in GiB ({precision}; {layout.run.train.optimizer}; {p.microbatches} "
             f"microbatches of {layout.microbatch_size}; {p.schedule}"
             f"{'' if ac == 'none' else f'; activation checkpointing {ac}'})")  # fmt: skip
    table = _table(title, columns, 1)
    for m in layout.memory:
        row = [str(m.pp_rank), *map(gib, _parts(m)), gib(m.total), gib(m.total_checkpointed)]
        if gpu_mem_gib is not None:
            row.append("yes" if m.total <= gpu_mem_gib * GiB else "[red]no[/]")
        table.add_row(*row)
    table.caption = (
        "FSDP: unsharded parameters + gradient accumulators during the step (dp > 1; the peak counts them "
        "instead of the sharded grads); bf16: autocast's weight copies; outputs: the last stage's "
        "outputs kept for the merged result (older torch only); working: largest temporary; w/ AC: "
        "peak with per-block activation checkpointing; activ.: what eager autograd saves in the blocks "
        "(compiled graphs usually save less; a compiled loss is counted as such)"
    )
    return table


def _parts(m: RankMemory) -> list[float]:
    return [m.params, m.grads, m.optimizer, m.unsharded, m.casts, m.activations, m.outputs, m.working]


def schedule_table(layout: LayoutEstimate, cost: CostModel, *, gpu: bool) -> Table:
    """Bubble, estimated step and bytes sent per rank; on GPUs (`gpu`: the step model's home), whether
    a rank is host-bound."""
    p = layout.run.parallel
    title = (f"schedule {p.schedule}: bubble {layout.bubble:.1%}, estimated step "
             f"{layout.step_time(cost) * 1e3:,.0f} ms; MiB sent per rank and step")  # fmt: skip
    columns = ["pp rank", "microbatches held", "TFLOP / step", "p2p", "tp", "fsdp", "tied emb.", "total"]
    table = _table(title, columns, 2)
    for m, c in zip(layout.memory, layout.comm, strict=True):
        held = "+".join(map(str, chunks_in_flight(p, m.pp_rank)))
        table.add_row(
            str(m.pp_rank), held, f"{layout.rank_flops(m.pp_rank) / 1e12:,.2f}",
            *map(mib, (c.p2p, c.tp, c.fsdp, c.tied, c.total)),
        )  # fmt: skip
    table.caption = layout.host_bound_note(cost) if gpu else None
    return table


def suggest_table(suggestions: list[Suggestion], *, gpus: int, gpu_mem_gib: float) -> Table:
    columns = ["#", "pp", "tp", "dp", "schedule", "microbatches", "sp", "peak GiB", "bubble",
               "step ms", "tokens/s", "per GPU"]  # fmt: skip
    table = _table(f"layouts for {gpus} GPU(s) of {gpu_mem_gib:g} GiB, best estimated throughput first "
                   "(microbatches: count × size; sp: sequence parallel)",
                   columns, 1)  # fmt: skip
    for i, s in enumerate(suggestions, 1):
        p, layout = s.run.parallel, s.estimate
        schedule = p.schedule + (f" (v={p.virtual_stages})" if p.virtual_stages > 1 else "")
        table.add_row(
            str(i), str(p.pp), str(p.tp), str(p.dp), schedule,
            f"{p.microbatches} × {layout.microbatch_size}", "yes" if p.sequence_parallel else "no",
            gib(layout.peak), f"{layout.bubble:.1%}", f"{s.step_time * 1e3:,.0f}",
            f"{s.tokens_per_s:,.0f}", f"{s.tokens_per_s / layout.world:,.0f}",
        )  # fmt: skip
    return table


def microbatch_hint(now: Suggestion, faster: Suggestion) -> str:
    """Another split of the same global batch into microbatches, and what it would change."""
    p, step, was = faster.run.parallel, faster.step_time, now.step_time
    return (
        f"same layout and global batch, estimated faster: parallel.microbatches={p.microbatches} "
        f"train.microbatch_size={faster.estimate.microbatch_size}: {step * 1e3:,.0f} ms per step instead "
        f"of {was * 1e3:,.0f} ({step / was - 1:+.0%}), peak {gib(faster.estimate.peak)} GiB instead of "
        f"{gib(now.estimate.peak)}"
    )
