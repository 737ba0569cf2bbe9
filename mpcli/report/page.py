"""The report as one self-contained HTML page: summary, plots as base64 PNGs, notes, the config.

No external files, scripts or fonts: the page can be mailed, attached to an issue or opened offline.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from html import escape

from mpcli.config.recipes import layout, model_name
from mpcli.report.data import Point, RunData
from mpcli.report.timing import PipelineStep

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 62rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; } td, th { padding: 0.25rem 0.8rem; border-bottom: 1px solid #ddd;
  text-align: left; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; } figcaption { color: #555; }
pre { background: #f6f6f6; padding: 1rem; overflow-x: auto; font-size: 0.85rem; }
"""


@dataclass
class Plot:
    id: str  # also the PNG's file name and, prefixed, the HTML element ids
    title: str
    alt: str
    png: bytes


def _mean_after_warmup(points: list[Point]) -> float:
    """The first fifth of the steps includes warm-up (allocation, compilation): leave it out."""
    kept = points[len(points) // 5 :] or points
    return sum(v for _, v in kept) / len(kept)


def summary_rows(data: RunData, step: PipelineStep | None, textbook: float | None) -> list[tuple[str, str]]:
    s, run = data.series, data.run
    rows = []
    if run is not None:
        rows += [("run", run.name), ("model", model_name(run)), ("layout", layout(run))]
        p, size = run.parallel, run.train.microbatch_size
        rows.append(("microbatches", f"{p.microbatches} of {size} samples each"))
    rows.append(("steps", str(s.loss[-1][0])))
    rows.append(("loss (first → last)", f"{s.loss[0][1]:.4f} → {s.loss[-1][1]:.4f}"))
    if s.eval_loss:
        rows.append(("eval loss (last)", f"{s.eval_loss[-1][1]:.4f} at step {s.eval_loss[-1][0]}"))
    if s.tokens_per_s:
        rows.append(("tokens/s (mean)", f"{_mean_after_warmup(s.tokens_per_s):,.0f}"))
    if s.mfu:
        rows.append(("MFU (mean)", f"{100 * _mean_after_warmup(s.mfu):.1f}%"))
    if s.max_mem_gb:
        rows.append(("peak memory (busiest rank)", f"{max(v for _, v in s.max_mem_gb):.2f} GB"))
    if step is not None:
        expected = f" (GPipe/1F1B textbook: {textbook:.0%})" if textbook is not None else ""
        rows.append(("pipeline bubble", f"{step.bubble:.0%} idle in step {step.step}{expected}"))
    return rows


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="plot-{plot.id}">\n'
        f'<img id="img-{plot.id}" alt="{escape(plot.alt)}" src="data:image/png;base64,{data}">\n'
        f"<figcaption>{escape(plot.title)}</figcaption>\n</figure>"
    )


def render(
    data: RunData, plots: list[Plot], notes: list[str], rows: list[tuple[str, str]], *, now: datetime
) -> str:
    title = f"mpcli report: {data.run.name if data.run else data.run_dir.name}"
    table = "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    figures = "\n".join(_figure(p) for p in plots)
    notes_html = "".join(f"<li>{escape(n)}</li>" for n in notes)
    config = escape(data.config_text) if data.config_text is not None else "(no config.yaml in the run)"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">{escape(str(data.run_dir))} · generated {now:%Y-%m-%d %H:%M}</p>
<h2>Summary</h2>
<table id="summary">
{table}
</table>
<h2>Plots</h2>
{figures}
{f'<ul id="notes">{notes_html}</ul>' if notes else ""}
<h2>Resolved config</h2>
<pre id="config">{config}</pre>
</body>
</html>
"""
