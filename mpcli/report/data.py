"""What a run directory holds, read into typed series: metrics, the resolved config, the timelines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from mpcli.config.compose import from_yaml
from mpcli.config.schema import RunConfig
from mpcli.errors import ConfigError
from mpcli.launch import RESOLVED_CONFIG
from mpcli.train.metrics import read_metrics
from mpcli.train.timeline import TIMELINE_DIR, Interval, StepRecord

METRICS = "metrics.jsonl"

Point = tuple[int, float]  # (step, value)


@dataclass
class Series:
    """Per-step figures from metrics.jsonl; optional ones hold only the steps that have them."""

    loss: list[Point] = field(default_factory=list)
    eval_loss: list[Point] = field(default_factory=list)
    eval_accuracy: list[Point] = field(default_factory=list)
    tokens_per_s: list[Point] = field(default_factory=list)
    mfu: list[Point] = field(default_factory=list)
    max_mem_gb: list[Point] = field(default_factory=list)


@dataclass
class RankTimeline:
    rank: int
    stages: list[int]
    device: str
    max_mem_gb: float | None
    steps: list[StepRecord]


@dataclass
class RunData:
    run_dir: Path
    series: Series
    config_text: str | None  # run_dir/config.yaml as written, None when missing
    run: RunConfig | None  # the same, parsed; None when missing or written by another schema
    timelines: list[RankTimeline]


def _series(records: list[dict[str, Any]]) -> Series:
    series = Series()
    for record in records:
        if "step" not in record:
            continue
        step = int(record["step"])
        for name in ("loss", "eval_loss", "eval_accuracy", "tokens_per_s", "mfu", "max_mem_gb"):
            value = record.get(name)  # a JSON record: most keys exist on some lines only
            if value is not None:
                getattr(series, name).append((step, float(value)))
    return series


def _timeline(path: Path) -> RankTimeline:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        steps = [
            StepRecord(s["step"], s["duration_s"], [Interval(**i) for i in s["intervals"]])
            for s in data["steps"]
        ]
        return RankTimeline(data["rank"], data["stages"], data["device"], data["max_mem_gb"], steps)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: not a timeline file written by mpcli ({exc.__class__.__name__})"
        ) from None


def _config(run_dir: Path) -> tuple[str | None, RunConfig | None]:
    path = run_dir / RESOLVED_CONFIG
    if not path.is_file():
        return None, None
    text = path.read_text(encoding="utf-8")
    try:
        return text, from_yaml(text)
    except OmegaConfBaseException:
        return text, None


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; a directory without training steps is a user error."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    series = _series(read_metrics(run_dir / METRICS))
    if not series.loss:
        raise ConfigError(f"{run_dir}: no training steps in {METRICS}; give the directory of a run")
    text, run = _config(run_dir)
    files = sorted((run_dir / TIMELINE_DIR).glob("rank_*.json"))
    timelines = sorted((_timeline(f) for f in files), key=lambda t: t.rank)
    return RunData(run_dir, series, text, run, timelines)
