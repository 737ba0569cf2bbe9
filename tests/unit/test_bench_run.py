"""bench/run.py, the benchmarks' driver, on CPU: its command line, the layouts it knows by name, the
table rows it prints, and the subcommands that need no GPU."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import TINY, bench_module


@pytest.fixture(scope="module")
def run() -> object:
    return bench_module("run")


def test_every_subcommand_parses(run) -> None:
    top = run.parser()
    commands = top._subparsers._group_actions[0].choices
    assert set(commands) == {
        "reference", "reference-llama", "compare", "matrix", "one-rank", "profile", "probe", "trace-summary",
        "fit-step-model", "plan-vs-measured", "layouts", "smoke", "nccl-bandwidth",
    }  # fmt: skip
    args = top.parse_args(["compare", "out", "--model", "medium", "large", "--variants", "none;tp2"])
    assert (args.out, args.model, args.variants, args.steps, args.warmup) == (
        Path("out"), ["medium", "large"], "none;tp2", 30, 10
    )  # fmt: skip
    assert top.parse_args(["reference", "--model", "xl"]).model == "xl"


def test_named_layouts_and_environment_words(run) -> None:
    env, overrides = run.split_variant("tp2")
    assert env == {} and overrides == ["parallel=tensor", "train.microbatch_size=48"]
    env, overrides = run.split_variant("TORCHINDUCTOR_CPP_WRAPPER=1 parallel.pp=2 parallel.microbatches=8")
    assert env == {"TORCHINDUCTOR_CPP_WRAPPER": "1"} and overrides == [
        "parallel.pp=2",
        "parallel.microbatches=8",
    ]
    assert run.split_variant("recipe") == ({}, [])
    env, overrides = run.split_variant("TORCHINDUCTOR_CUDAGRAPHS=1 tp2 parallel.sequence_parallel=false")
    assert env == {"TORCHINDUCTOR_CUDAGRAPHS": "1"}
    assert overrides == ["parallel=tensor", "train.microbatch_size=48", "parallel.sequence_parallel=false"]
    # gpt2-xl's 25 heads rule out tensor parallelism; gpt2-large's 20 do not.
    assert run.default_variants(25, 4) == ["none", "pp2", "pp4", "pp4mem"]
    assert run.default_variants(20, 4) == ["none", "pp2", "tp2", "pp4", "pp4mem", "pp2tp2"]
    assert run.default_variants(20, 1) == ["none"]


def test_table_row_against_the_reference(run, tmp_path: Path) -> None:
    records = [{"step": s, "loss": 1.0, "tokens_per_s_per_device": 100.0 * s, "mfu": 0.1, "max_mem_gb": s}
               for s in range(1, 5)] + [{"eval_loss": 2.0}]  # fmt: skip
    ref = {"tokens_per_s": 700.0, "mfu": 0.4, "max_mem_gb": 9.0}
    row = run.table_row(ref, records, "gpt2-xl pp2", 2, 61.4)
    assert (
        row == "| gpt2-xl pp2 | 350 | 10.0% | 4.0 | 0.50x | 2 steps, 61 s | ref 700 tok/s, 40.0%, 9.0 GiB |"
    )
    assert "no single-GPU reference" in run.table_row(None, records, "gpt-7b recipe", 2, 1)
    assert "no steps after warm-up" in run.table_row(ref, records, "cut off", 4, 1)
    table = tmp_path / "table.md"
    run.append_row(table, row)
    run.append_row(table, row)
    merged = tmp_path / "merged.md"
    run.merge_tables([table, tmp_path / "missing.md", table], merged)
    assert merged.read_text() == f"{run.TABLE_HEADER}\n" + f"{row}\n" * 4


def test_cut_off_runs_report_none(run, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    assert run.run_logged(["sh", "-c", "echo hi"], log) == 0 and log.read_text() == "hi\n"
    assert run.run_logged(["sleep", "30"], log, timeout=0.5) is None


def test_plan_vs_measured_estimates_without_processes(run) -> None:
    peak, per_rank = run.planned_peak(["conf=gpt2-pipeline", "parallel.pp=2", *run.PLAN_FIXED])
    assert len(per_rank) == 2 and peak == pytest.approx(max(per_rank))
    names = [name for name, _, _ in run.PLAN_LAYOUTS]
    assert len(names) == len(set(names)) == 10


def test_trace_summary_and_one_rank_through_the_driver(run, tmp_path: Path, capsys) -> None:
    trace = tmp_path / "trace_rank0.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump(
            {"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "ts": 0, "dur": 1000, "tid": 0}]}, f
        )
    run.main(["trace-summary", str(trace), str(tmp_path / "absent.json.gz")])
    out = capsys.readouterr().out
    assert "window 1.0 ms, compute busy 1.0 ms" in out and "absent.json.gz: no such file" in out
    # Overrides may follow the options or come before them.
    run.main(
        ["one-rank", *TINY, "parallel=tensor", "--steps", "1", "--warmup", "1", "train.microbatch_size=2"]
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["layout"].endswith("parallel=tensor train.microbatch_size=2")
