"""Every layout matches one process: per-step losses, eval loss/accuracy and final parameters.

Covers every pipeline schedule, tensor parallel (with/without sequence and loss parallel), data
parallel, their hybrids up to pp2 x dp2 x tp2, and the GPT-2, Llama, MLP and CNN families.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mpcli.launch import launch
from tests.conftest import tiny_run
from tests.dist.tasks import LAYOUTS, STEPS, Layout, parity_task, reference

pytestmark = pytest.mark.dist

# SGD (Adam would amplify float noise in zero-gradient directions) and a clip that bites, so the
# global gradient norm across stages and shards is part of what must match.
PARITY = ["train.optimizer=sgd", "train.lr=0.5", "train.grad_clip=0.5", "train.warmup=0",
          "train.microbatch_size=2", "parallel.microbatches=4", "data.size=2000"]  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Run every layout, one spawn per world size; layout name -> per-rank result dicts."""
    out: dict[str, list[dict]] = {}
    for world in sorted({layout.world for layout in LAYOUTS}):
        run_dir = tmp_path_factory.mktemp(f"world{world}")
        # The launched layout only sets the world size; each case builds its own mesh.
        launch(tiny_run(*PARITY, f"parallel.pp={world}"), run_dir, task=parity_task)
        for layout in [layout for layout in LAYOUTS if layout.world == world]:
            files = sorted(Path(run_dir).glob(f"{layout.name}.rank*.pt"))
            assert len(files) == world, f"{layout.name}: expected {world} result files, got {len(files)}"
            out[layout.name] = [torch.load(f, weights_only=True) for f in files]
    return out


def _merged_params(per_rank: list[dict]) -> dict[str, torch.Tensor]:
    """Union of the stages' parameters; replicas (dp, tp) must agree exactly with each other."""
    merged: dict[str, torch.Tensor] = {}
    for result in per_rank:
        for name, value in result["params"].items():
            if name in merged:
                torch.testing.assert_close(value, merged[name], rtol=0, atol=0, msg=name)
            merged[name] = value
    return merged


def _check(results: dict[str, list[dict]], layout: Layout) -> None:
    ref = results[reference(layout.family).name][0]
    for rank_result in results[layout.name]:
        assert len(rank_result["losses"]) == STEPS
        torch.testing.assert_close(rank_result["losses"], ref["losses"], rtol=0, atol=1e-5)
        assert abs(rank_result["eval_loss"] - ref["eval_loss"]) < 1e-5
        assert rank_result["accuracy"] == pytest.approx(ref["accuracy"]) if ref["accuracy"] else True
    params = _merged_params(results[layout.name])
    ref_params = dict(ref["params"])
    # One process ties GPT-2's head to the embedding (one parameter); a pipeline keeps a synced copy.
    if layout.family == "gpt2" and "head.weight" in params:
        torch.testing.assert_close(params.pop("head.weight"), ref_params["wte.weight"], rtol=0, atol=1e-5)
    assert params.keys() == ref_params.keys()
    for key in ref_params:
        torch.testing.assert_close(params[key], ref_params[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("layout", [lay for lay in LAYOUTS if lay.world > 1], ids=lambda lay: lay.name)
def test_layout_matches_one_process(results: dict[str, list[dict]], layout: Layout) -> None:
    _check(results, layout)


@pytest.mark.parametrize("family", ["gpt2", "mlp", "cnn", "llama"])
def test_reference_learns(results: dict[str, list[dict]], family: str) -> None:
    """Guards against a vacuous parity: each reference run must really change its loss."""
    losses = results[reference(family).name][0]["losses"]
    assert losses[-1] < losses[0] - 0.01
