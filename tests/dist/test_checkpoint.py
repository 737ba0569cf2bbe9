"""Checkpoints: resume under another layout, restarts, crashes mid-save, export of sharded weights.

Every case trains the same run for STEPS steps with checkpoints at step K and STEPS. Phases, each
running all its cases in one spawn (or here, in a process group of one): references (pp1, here) ->
pp2×dp2 -> pp2, dp2 and resumes into them -> resumes into pp1 (here). A resumed run must reproduce
the uninterrupted pp1 losses of steps K+1..STEPS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from mpcli.checkpoint import store, weights
from mpcli.config.schema import RunConfig
from mpcli.launch import launch
from mpcli.topology import ParallelDims
from mpcli.train.metrics import read_metrics
from tests.conftest import tiny_run
from tests.dist.checkpoint_tasks import CASES, run_cases, train_killed_in_second_save

pytestmark = pytest.mark.dist

STEPS, K = 4, 2
BASE = ["train.microbatch_size=2", "parallel.microbatches=4", "train.warmup=2", "train.eval_every=0",
        f"train.steps={STEPS}", f"checkpoint.every={K}"]  # fmt: skip
# SGD: a clip that bites and a warm-up, so the global grad norm and the LR schedule must resume too.
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.5, "grad_clip": 0.5},
    "adamw": {"optimizer": "adamw", "lr": 3e-3, "grad_clip": 0.5, "weight_decay": 0.1},
}
SGD_RUN = [f"train.{k}={v}" for k, v in OPTIMIZERS["sgd"].items()]
TOKENS = "tokens.bin"


def base_run(root: Path, *overrides: str) -> RunConfig:
    """The tiny run on a small token file in `root` (opens instantly, unlike the byte corpus)."""
    return tiny_run(*BASE, "data.name=tokens", f"data.path={root / TOKENS}", *overrides)


def _case(name: str, pp: int, dp: int, schedule: str, opt: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "pp": pp, "dp": dp, "schedule": schedule, "train": OPTIMIZERS[opt], **extra}


def _step(root: Path, case: str, step: int = K) -> str:
    return str(root / case / store.CHECKPOINTS / store.step_name(step))


def _write_cases(run_dir: Path, root: Path, cases: list[dict[str, Any]]) -> None:
    run_dir.mkdir()
    (run_dir / CASES).write_text(json.dumps(cases))
    for case in cases:
        (root / case["name"]).symlink_to(run_dir / case["name"])


def _spawned(root: Path, world: int, cases: list[dict[str, Any]]) -> None:
    """Run the cases in `world` worker processes (one spawn for all of them)."""
    run_dir = root / f"world{world}-{cases[0]['name']}"
    _write_cases(run_dir, root, cases)
    launch(base_run(root, f"parallel.pp={world}"), run_dir, task=run_cases)


def _in_process(root: Path, cases: list[dict[str, Any]]) -> None:
    """Run one-process cases here, in a process group of one (saves a spawn and its imports)."""
    run_dir = root / f"local-{cases[0]['name']}"
    _write_cases(run_dir, root, cases)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        run_cases(base_run(root), dims=ParallelDims(pp=1, dp=1), device=torch.device("cpu"), run_dir=run_dir)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run every phase; returns the directory holding one sub-directory per case."""
    root = tmp_path_factory.mktemp("checkpoints")
    text = np.frombuffer(Path(__file__).read_bytes(), dtype=np.uint8)  # learnable: it is text
    np.resize(text, 40_000).astype(np.uint16).tofile(root / TOKENS)
    opts = list(OPTIMIZERS)
    _in_process(root, [_case(f"{o}-ref", 1, 1, "1f1b", o) for o in opts])
    weights.export(root / "sgd-ref", root / "ref.safetensors")
    _spawned(root, 4, [
        *[_case(f"{o}-pp2dp2", 2, 2, "gpipe", o) for o in opts],
        _case("sgd-pp2tp2", 2, 1, "1f1b", "sgd", tp=2),
    ])  # fmt: skip
    _spawned(root, 2, [
        *[_case(f"{o}-pp2", 2, 1, "1f1b", o) for o in opts],
        *[_case(f"{o}-dp2", 1, 2, "1f1b", o) for o in opts],
        *[_case(f"{o}-pp1-to-pp2", 2, 1, "gpipe", o, checkpoint={"resume": _step(root, f"{o}-ref")})
          for o in opts],
        *[_case(f"{o}-pp2dp2-to-dp2", 1, 2, "1f1b", o, checkpoint={"resume": _step(root, f"{o}-pp2dp2")})
          for o in opts],
        _case("sgd-tp2", 1, 1, "1f1b", "sgd", tp=2),
        _case("sgd-pp2tp2-to-dp2", 1, 2, "1f1b", "sgd", checkpoint={"resume": _step(root, "sgd-pp2tp2")}),
        _case("sgd-pp2-async", 2, 1, "1f1b", "sgd", checkpoint={"async_save": True}),
        _case("init-pp2", 2, 1, "1f1b", "sgd", init_from=str(root / "ref.safetensors"), params_only=True),
        _case("init-dp2", 1, 2, "1f1b", "sgd", init_from=str(root / "ref.safetensors"), params_only=True),
        _case("rng-pp1-to-pp2", 2, 1, "1f1b", "sgd", checkpoint={"resume": _step(root, "sgd-ref")},
              params_only=True),
    ])  # fmt: skip
    # tp2 -> pp2 needs the tp2 checkpoint from the spawn above: one more (small) spawn.
    _spawned(root, 2, [
        _case("sgd-tp2-to-pp2", 2, 1, "1f1b", "sgd", checkpoint={"resume": _step(root, "sgd-tp2")}),
    ])  # fmt: skip
    _in_process(root, [
        *[_case(f"{o}-pp2-to-pp1", 1, 1, "1f1b", o, checkpoint={"resume": _step(root, f"{o}-pp2")})
          for o in opts],
        *[_case(f"{o}-dp2-to-dp1", 1, 1, "1f1b", o, checkpoint={"resume": _step(root, f"{o}-dp2")})
          for o in opts],
        _case("sgd-async-to-pp1", 1, 1, "gpipe", "sgd", checkpoint={"resume": _step(root, "sgd-pp2-async")}),
        _case("sgd-tp2-to-pp1", 1, 1, "1f1b", "sgd", checkpoint={"resume": _step(root, "sgd-tp2")}),
    ])  # fmt: skip
    return root


def losses(root: Path, case: str) -> list[list[float]]:
    """Per-rank step losses of a case."""
    files = sorted((root / case).glob("losses.*.json"))
    assert files, f"{case}: no results"
    return [json.loads(f.read_text()) for f in files]


def reference(root: Path, opt: str) -> list[float]:
    return losses(root, f"{opt}-ref")[0]


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("case", ["pp2", "dp2", "pp2dp2"])
def test_source_layouts_match_one_process(runs: Path, case: str, opt: str) -> None:
    for rank_losses in losses(runs, f"{opt}-{case}"):
        torch.testing.assert_close(rank_losses, reference(runs, opt), rtol=0, atol=1e-5)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("case", ["pp2-to-pp1", "pp1-to-pp2", "pp2dp2-to-dp2", "dp2-to-dp1"])
def test_resume_under_another_layout_continues_the_loss_curve(runs: Path, case: str, opt: str) -> None:
    ref = reference(runs, opt)
    assert ref[-1] < ref[0]  # the reference learns, so a resume from scratch would differ
    for rank_losses in losses(runs, f"{opt}-{case}"):
        assert len(rank_losses) == STEPS - K  # it started at step K, not 0
        torch.testing.assert_close(rank_losses, ref[K:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["tp2", "pp2tp2", "tp2-to-pp1", "tp2-to-pp2", "pp2tp2-to-dp2"])
def test_tensor_parallel_checkpoints_reshard(runs: Path, case: str) -> None:
    """Sharded (DTensor) parameters save and load into layouts without tensor parallelism."""
    ref = reference(runs, "sgd")
    for rank_losses in losses(runs, f"sgd-{case}"):
        torch.testing.assert_close(rank_losses, ref[-len(rank_losses) :], rtol=0, atol=1e-5)
        assert len(rank_losses) == (STEPS - K if "-to-" in case else STEPS)


def test_async_saves_are_committed_and_resume(runs: Path) -> None:
    root = runs / "sgd-pp2-async" / store.CHECKPOINTS
    assert [store.read_meta(p).step for p in store.list_checkpoints(root)] == [K, STEPS]
    assert store.latest(root) == root / store.step_name(STEPS)
    assert not list(root.glob(f"*{store.PARTIAL}"))
    torch.testing.assert_close(
        losses(runs, "sgd-async-to-pp1")[0], reference(runs, "sgd")[K:], rtol=0, atol=1e-5
    )


def test_checkpoint_holds_layout_free_keys_and_the_data_position(runs: Path) -> None:
    path = Path(_step(runs, "sgd-pp2dp2"))
    meta = store.read_meta(path)
    assert (meta.step, meta.layout.pp, meta.layout.dp, meta.layout.world_size) == (K, 2, 2, 4)
    assert meta.samples == K * 2 * 4  # global batch = microbatch_size × microbatches (dp kept it)
    saved = store.tensors(path)
    assert "model.wte.weight" in saved and "model.head.weight" not in saved  # the tied copy once
    assert saved["model.blocks.0.attn.q.weight"].shape == (32, 32)  # global shape, not a dp shard
    assert {f"rng.{rank}.cpu" for rank in range(4)} <= saved.keys()


def test_export_consolidates_shards_of_any_layout(runs: Path, tmp_path: Path) -> None:
    sharded = weights.export(runs / "sgd-pp2dp2", tmp_path / "pp2dp2.safetensors")
    single = weights.read_model(Path(_step(runs, "sgd-ref", STEPS)))
    assert sharded.keys() == single.keys()
    for name, value in single.items():
        torch.testing.assert_close(sharded[name], value, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", ["init-pp2", "init-dp2"])
def test_init_from_loads_full_weights_into_any_layout(runs: Path, case: str) -> None:
    exported = weights.read_model(Path(_step(runs, "sgd-ref", STEPS)))
    for path in sorted((runs / case).glob("params.*.pt")):
        params = torch.load(path, weights_only=True)
        for name, value in params.items():
            source = exported["wte.weight" if name == "head.weight" else name]
            torch.testing.assert_close(value, source, rtol=0, atol=0, msg=name)


def test_resume_under_another_layout_seeds_rng_from_the_step(runs: Path) -> None:
    """Per-rank RNG states cannot follow a layout change; every rank restarts its stream from
    seed + resumed step instead of replaying the stream of step 0."""
    seed = base_run(runs).train.seed
    torch.manual_seed(seed + K)
    expected = torch.get_rng_state()
    torch.manual_seed(seed)
    from_start = torch.get_rng_state()
    states = [
        torch.load(path, weights_only=True) for path in sorted((runs / "rng-pp1-to-pp2").glob("rng.*.pt"))
    ]
    assert len(states) == 2
    for state in states:
        assert torch.equal(state, expected) and not torch.equal(state, from_start)


def _final_losses(run_dir: Path) -> list[float]:
    """Loss of each step as last recorded (a restarted run records re-run steps again)."""
    by_step = {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}
    return [by_step[s] for s in sorted(by_step)]


def test_kill_during_save_keeps_the_previous_checkpoint_and_a_restart_resumes_it(
    runs: Path, tmp_path: Path
) -> None:
    """Rank 1 is killed (SIGKILL) while writing the step-4 checkpoint; with max_restarts=1 torch
    elastic restarts the group, which must resume from step 2 (the half-written step 4 is not
    "latest"), delete the partial directory and finish with the uninterrupted losses."""
    run = base_run(runs, *SGD_RUN, "parallel.pp=2", "topology.max_restarts=1")
    results = launch(run, tmp_path, task=train_killed_in_second_save)
    ref = reference(runs, "sgd")
    for result in results.values():
        assert len(result.losses) == STEPS - K  # the second attempt started at step K
        torch.testing.assert_close(result.losses, ref[K:], rtol=0, atol=1e-5)
    log = (tmp_path / "logs" / "rank_0.log").read_text()
    assert f"resumed from {tmp_path / store.CHECKPOINTS / store.step_name(K)} at step {K}" in log
    torch.testing.assert_close(_final_losses(tmp_path), ref, rtol=0, atol=1e-5)
    root = tmp_path / store.CHECKPOINTS
    assert not list(root.glob(f"*{store.PARTIAL}"))
    assert store.latest(root) == root / store.step_name(STEPS)
