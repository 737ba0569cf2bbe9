"""The report's figures, drawn with matplotlib's object API (a `Figure` per plot: no pyplot state,
no GUI backend), each returned as PNG bytes."""

from __future__ import annotations

import io

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mpcli.report.data import Point, RankTimeline, RunData, Series
from mpcli.report.page import Plot
from mpcli.report.timing import PipelineStep

WIDTH_IN, DPI = 8.0, 110
COLORS = {"forward": "#4c72b0", "backward": "#dd8452", "idle": "#e8e8e8"}


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _line(ax: Axes, points: list[Point], label: str, **style: object) -> None:
    ax.plot([s for s, _ in points], [v for _, v in points], label=label, **style)


def _axes(fig: Figure, rows: int) -> list[Axes]:
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return list(axes)


def loss_plot(series: Series) -> Plot:
    fig = Figure(figsize=(WIDTH_IN, 3.6), layout="constrained")
    (ax,) = _axes(fig, 1)
    _line(ax, series.loss, "train loss", linewidth=1.2)
    if series.eval_loss:
        _line(ax, series.eval_loss, "eval loss", marker="o", linewidth=1.2)
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if series.eval_accuracy:
        twin = ax.twinx()
        _line(twin, series.eval_accuracy, "eval accuracy", marker="s", color="#55a868", linewidth=1.0)
        twin.set_ylabel("eval accuracy")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="upper right")
    ax.set_title("Loss")
    what = "training loss" + (" and eval loss" if series.eval_loss else "")
    return Plot("loss", "Loss", f"{what} by step", _png(fig))


def throughput_plot(series: Series) -> Plot:
    with_mfu = bool(series.mfu)
    fig = Figure(figsize=(WIDTH_IN, 5.2 if with_mfu else 3.2), layout="constrained")
    axes = _axes(fig, 2 if with_mfu else 1)
    _line(axes[0], series.tokens_per_s, "tokens/s", linewidth=1.2)
    axes[0].set_ylabel("tokens/s")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("Throughput")
    if with_mfu:
        _line(axes[1], [(s, 100 * v) for s, v in series.mfu], "MFU", color="#c44e52", linewidth=1.2)
        axes[1].set_ylabel("MFU (%)")
        axes[1].set_ylim(bottom=0)
    alt = "tokens per second" + (" and MFU" if with_mfu else "") + " by step"
    return Plot("throughput", "Throughput" + (" and MFU" if with_mfu else ""), alt, _png(fig))


def memory_plot(series: Series, timelines: list[RankTimeline]) -> Plot | None:
    """Peak memory over the steps (busiest rank) and per rank, where the run recorded them (GPU)."""
    per_rank = [(t.rank, t.max_mem_gb) for t in timelines if t.max_mem_gb is not None]
    if not series.max_mem_gb and not per_rank:
        return None
    fig = Figure(figsize=(WIDTH_IN, 3.2 * (bool(series.max_mem_gb) + bool(per_rank))), layout="constrained")
    axes = list(fig.subplots(bool(series.max_mem_gb) + bool(per_rank), 1, squeeze=False)[:, 0])
    if series.max_mem_gb:
        ax = axes.pop(0)
        _line(ax, series.max_mem_gb, "peak allocated, busiest rank", linewidth=1.2)
        ax.set(xlabel="step", ylabel="GB", title="Peak memory (max over ranks)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    if per_rank:
        ax = axes.pop(0)
        ax.bar([f"rank {r}" for r, _ in per_rank], [gb for _, gb in per_rank], color="#8172b3")
        ax.set(ylabel="GB", title="Peak memory per rank (after the timeline steps)")
        ax.grid(alpha=0.3, axis="y")
    return Plot("memory", "Memory", "peak GPU memory by step and per rank", _png(fig))


def timeline_plot(step: PipelineStep, textbook: float | None) -> Plot:
    """One row per rank: forward and backward of each microbatch on a grey (idle) band."""
    fig = Figure(figsize=(WIDTH_IN, 1.2 + 0.55 * len(step.rows)), layout="constrained")
    ax = fig.subplots()
    ms = 1000.0
    for y, row in enumerate(step.rows):
        ax.broken_barh([(step.start * ms, step.span * ms)], (y - 0.4, 0.8), facecolors=COLORS["idle"])
        first_stage = min(row.stages)
        for i in row.intervals:
            alpha = 1.0 if i.stage == first_stage else 0.6  # a second (virtual) stage on this rank
            bar = [(i.start * ms, (i.end - i.start) * ms)]
            ax.broken_barh(bar, (y - 0.4, 0.8), facecolors=COLORS[i.kind], alpha=alpha, edgecolor="white")
            if i.end - i.start > 0.025 * step.span:
                label = f"{i.kind[0].upper()}{i.microbatch}"
                ax.text((i.start + i.end) / 2 * ms, y, label, ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(step.rows)))
    ax.set_yticklabels([f"rank {r.rank} · stage {','.join(map(str, r.stages))}" for r in step.rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the step started")
    ax.set_xlim(0, step.end * ms * 1.01)
    expected = f"; GPipe/1F1B textbook {textbook:.0%}" if textbook is not None else ""
    ax.set_title(f"Pipeline step {step.step}: idle (bubble) {step.bubble:.0%} of the span{expected}")
    handles = [Patch(color=COLORS[k], label=k) for k in ("forward", "backward", "idle")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    alt = f"per-rank timeline of pipeline step {step.step}: forward, backward and idle time of each rank"
    return Plot("timeline", "Pipeline timeline", alt, _png(fig))


def draw_all(
    data: RunData, step: PipelineStep | None, textbook: float | None
) -> tuple[list[Plot], list[str]]:
    """Every plot the run has data for, and a note for each one it has not."""
    plots, notes = [loss_plot(data.series), throughput_plot(data.series)], []
    if not data.series.mfu:
        notes.append("No MFU: it is recorded on GPUs with a known peak (or train.peak_tflops), not on CPU.")
    memory = memory_plot(data.series, data.timelines)
    if memory is None:
        notes.append("No memory plot: peak memory is recorded on GPU runs only.")
    else:
        plots.append(memory)
    if step is not None:
        plots.append(timeline_plot(step, textbook))
    elif not data.timelines:
        notes.append("No pipeline timeline: none recorded (train.timeline_steps=0, or too few steps).")
    else:
        notes.append("No pipeline timeline: the ranks' timeline files share no recorded step.")
    return plots, notes
