"""Balanced splits: every mode covers every block exactly once, and follows its costs."""

from __future__ import annotations

import itertools

import pytest
import torch

from mpcli.config.compose import compose
from mpcli.config.schema import RunConfig
from mpcli.parallel.partition import Costs, balanced_split, flop_costs, min_max_split, param_costs

CPU = torch.device("cpu")


def brute_force(costs: Costs, stages: int) -> float:
    """The best achievable max stage cost, by trying every split."""
    n, best = len(costs.blocks), float("inf")
    for cuts in itertools.combinations(range(1, n), stages - 1):
        bounds = [0, *cuts, n]
        loads = [sum(costs.blocks[a:b]) for a, b in itertools.pairwise(bounds)]
        loads[0] += costs.first
        loads[-1] += costs.last
        best = min(best, max(loads))
    return best


@pytest.mark.parametrize(
    ("costs", "stages"),
    [
        (Costs(0, [1.0] * 7, 0), 3),
        (Costs(5, [1.0] * 8, 0), 2),
        (Costs(0, [1.0] * 8, 6), 3),
        (Costs(2, [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0], 3), 4),
        (Costs(0, [1.0, 1.0], 0), 2),
    ],
)
def test_min_max_split_is_optimal_and_covers_every_block(costs: Costs, stages: int) -> None:
    split = min_max_split(costs, stages)
    assert len(split) == stages and min(split) >= 1 and sum(split) == len(costs.blocks)
    bounds = [0, *itertools.accumulate(split)]
    loads = [sum(costs.blocks[a:b]) for a, b in itertools.pairwise(bounds)]
    loads[0] += costs.first
    loads[-1] += costs.last
    assert max(loads) == pytest.approx(brute_force(costs, stages))


def test_min_max_split_rejects_more_stages_than_blocks() -> None:
    with pytest.raises(ValueError, match="cannot split 2 blocks into 3"):
        min_max_split(Costs(0, [1.0, 1.0], 0), 3)


def run(*overrides: str) -> RunConfig:
    return compose("gpt2-pipeline", ["topology.device=cpu", *overrides])


def test_uniform_split_is_even_with_extras_first() -> None:
    assert balanced_split(run("model=gpt2-tiny", "model.n_layer=7", "parallel.pp=3"), CPU) == [3, 2, 2]


def test_explicit_split_wins_over_balance() -> None:
    assert balanced_split(run("parallel.balance=flops", "parallel.split=[5,7]"), CPU) == [5, 7]


def test_param_costs_count_every_parameter_once_per_stage() -> None:
    r = run("model=gpt2-small")
    costs = param_costs(r)
    d, vocab, seq = 768, 50304, 1024
    assert costs.first == vocab * d + seq * d  # wte + wpe
    assert costs.last == 2 * d + vocab * d  # ln_f + the head copy of the tied embedding
    assert costs.blocks == [12 * d * d + 13 * d] * 12  # q, k, v, proj, fc, proj + biases + 2 norms


def test_params_balance_moves_blocks_away_from_the_embedding_stages() -> None:
    split = balanced_split(run("model=gpt2-small", "parallel.pp=3", "parallel.balance=params"), CPU)
    assert split[1] > split[0] and split[1] > split[2]  # the middle stage has no 38 M embedding


def test_flop_costs_see_the_head_as_the_heavy_part() -> None:
    costs = flop_costs(run("model=gpt2-small", "train.microbatch_size=1"))
    assert costs.first == 0  # embedding lookups do no multiply-adds
    # A block: 3 x (24 T d^2 + 4 T^2 d) training FLOPs; the head: 3 x 2 T d V.
    t, d, vocab = 1024, 768, 50304
    assert costs.blocks[0] == pytest.approx(3 * (24 * t * d * d + 4 * t * t * d), rel=0.01)
    assert costs.last == pytest.approx(3 * 2 * t * d * vocab, rel=0.01)
    split = balanced_split(run("model=gpt2-small", "parallel.balance=flops"), CPU)
    assert split[0] > split[1]  # the last stage carries the head, so it gets fewer blocks


@pytest.mark.parametrize(
    "family", [["model=mlp-small", "data=synthetic"], ["model=cnn-small", "data=shapes"]]
)
@pytest.mark.parametrize("mode", ["params", "flops", "time"])
def test_every_mode_on_every_family_covers_the_blocks(family: list[str], mode: str) -> None:
    r = run(*family, "parallel.pp=3", f"parallel.balance={mode}", "train.microbatch_size=2")
    split = balanced_split(r, CPU)
    assert len(split) == 3 and min(split) >= 1 and sum(split) == r.model.n_layer


def test_time_balance_follows_measured_cost() -> None:
    """CNN blocks at full resolution cost more than the later strided ones: measured splits see it."""
    r = run(
        "model=cnn-small", "data=shapes", "parallel.pp=2", "parallel.balance=time", "train.microbatch_size=8"
    )
    split = balanced_split(r, CPU)
    assert sum(split) == 6 and split[0] <= 3
