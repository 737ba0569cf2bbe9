"""The schedule table against torch: classes, stage placement, and one error for an unknown name."""

from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.distributed.pipelining import schedules as torch_schedules
from typer.testing import CliRunner

from mpcli.cli.app import app
from mpcli.config.compose import to_yaml
from mpcli.config.schema import RunConfig
from mpcli.config.validate import validate
from mpcli.errors import ConfigError
from mpcli.estimate.layout import estimate
from mpcli.estimate.profile import profile_model
from mpcli.estimate.schedule import bubble_fraction, chunks_at_peaks, chunks_in_flight
from mpcli.parallel.pipeline import stage_ranks
from mpcli.parallel.schedules import SPECS, ScheduleSpec, schedule_spec
from mpcli.report.timing import textbook_bubble
from tests.conftest import tiny_run

UNKNOWN = (
    "parallel.schedule=zigzag: must be one of "
    "gpipe, 1f1b, interleaved-1f1b, looped-bfs, interleaved-zero-bubble, zbv, dualpipev"
)


def _zigzag(*overrides: str) -> RunConfig:
    """A layout naming a schedule that is not in the table (composed, so not yet validated)."""
    run = tiny_run("parallel.pp=2", *overrides)
    return replace(run, parallel=replace(run.parallel, schedule="zigzag"))


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_torch_class_and_kind(spec: ScheduleSpec) -> None:
    cls = spec.torch_class
    assert getattr(torch_schedules, cls.__name__) is cls
    assert spec.multi_stage == issubclass(cls, torch_schedules.PipelineScheduleMulti)
    assert spec.multi_stage != issubclass(cls, torch_schedules.PipelineScheduleSingle)
    fewest, most = spec.virtual_stages
    assert (fewest, most) == ((2, 2) if spec.v_shaped else (2, None) if spec.multi_stage else (1, 1))


def _stub_stage(index: int, pp: int, stages: int) -> types.SimpleNamespace:
    """What torch's multi-stage constructors read of a PipelineStage, without a process group."""
    return types.SimpleNamespace(
        stage_index=index, num_stages=stages, group_size=pp, group_rank=0,
        is_first=index == 0, is_last=index == stages - 1, submod=torch.nn.Linear(1, 1),
    )  # fmt: skip


def _torch_stage_ranks(spec: ScheduleSpec, pp: int, virtual: int) -> list[int]:
    """The placement torch's own schedule assumes (read from the attribute it sets on construction)."""
    stages = pp * virtual
    mine = [_stub_stage(s, pp, stages) for s in spec.stages_of_rank(pp, virtual, 0)]
    schedule = spec.torch_class(mine, 2 * stages, loss_fn=lambda out, target: out.sum())
    mapping = schedule.stage_index_to_group_rank  # type: ignore[attr-defined]
    return [mapping[s] for s in range(stages)]


@pytest.mark.parametrize("pp", [2, 4])
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_placement_is_torchs(spec: ScheduleSpec, pp: int) -> None:
    virtual = spec.virtual_stages[0]
    ranks = spec.stage_ranks(pp, virtual)
    if not spec.multi_stage:
        assert ranks == list(range(pp))  # one stage per rank, stage r on rank r
        return
    assert ranks == _torch_stage_ranks(spec, pp, virtual)
    if spec.v_shaped:
        assert ranks == [*range(pp), *reversed(range(pp))]
    else:
        assert ranks == [s % pp for s in range(pp * virtual)]
        assert spec.stage_ranks(pp, 3) == _torch_stage_ranks(spec, pp, 3)
    assert [spec.stages_of_rank(pp, virtual, r) for r in range(pp)] == [
        [s for s, rank in enumerate(ranks) if rank == r] for r in range(pp)
    ]


def test_unknown_name_is_one_line_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as spec_error:
        schedule_spec("zigzag")
    assert str(spec_error.value) == UNKNOWN
    run = _zigzag()
    entry_points = [
        lambda: validate(run, cuda_devices=0),
        lambda: bubble_fraction(run.parallel),
        lambda: chunks_in_flight(run.parallel, 0),
        lambda: chunks_at_peaks(run.parallel, 0),
        lambda: estimate(run, profile_model(tiny_run()), bf16=False, compiled=False),
        lambda: stage_ranks(run.parallel),
        lambda: textbook_bubble(run),
    ]
    for call in entry_points:
        with pytest.raises(ConfigError) as excinfo:
            call()
        assert str(excinfo.value) == UNKNOWN
    # `mpcli report` on a run directory whose config names a schedule this mpcli does not know.
    (tmp_path / "config.yaml").write_text(to_yaml(run))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 5.0}) + "\n")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert UNKNOWN in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("schedule", "pp", "virtual", "microbatches", "bubble"),
    [
        ("gpipe", 4, 1, 8, 3 / 11),
        ("1f1b", 4, 1, 8, 3 / 11),
        ("1f1b", 2, 1, 2, 1 / 3),
        ("1f1b", 1, 1, 4, 0.0),
        ("interleaved-1f1b", 2, 2, 4, 0.5 / 4.5),
        ("looped-bfs", 4, 2, 8, 1.5 / 9.5),
        ("interleaved-zero-bubble", 4, 2, 8, 0.5 / 8.5),
        ("zbv", 2, 2, 4, 1 / 25),
        ("dualpipev", 4, 2, 8, 0.5 / 8.5),
        ("dualpipev", 1, 2, 2, 0.0),
    ],
)
def test_bubble_numbers(schedule: str, pp: int, virtual: int, microbatches: int, bubble: float) -> None:
    assert schedule_spec(schedule).bubble(pp, virtual, microbatches) == pytest.approx(bubble)


def test_only_fill_and_drain_schedules_report_a_textbook_bubble() -> None:
    textbook = {name for name, spec in SPECS.items() if spec.has_textbook_bubble}
    assert textbook == {"gpipe", "1f1b"}
    assert textbook_bubble(tiny_run("parallel.pp=2", "parallel.microbatches=2")) == pytest.approx(1 / 3)
    zbv = tiny_run("parallel.pp=2", "parallel.schedule=zbv", "parallel.virtual_stages=2")
    assert textbook_bubble(zbv) is None


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_in_flight_has_one_count_per_local_stage(spec: ScheduleSpec) -> None:
    pp, virtual = 4, spec.virtual_stages[0]
    microbatches = spec.min_microbatches(pp, virtual) * 2
    for rank in range(pp):
        held = spec.chunks_in_flight(pp, virtual, microbatches, rank)
        assert len(held) == virtual and all(0 < n <= microbatches for n in held)
        assert all(len(peak) == virtual for peak in spec.chunks_at_peaks(pp, virtual, microbatches, rank))
