"""`faster_microbatches`: another split of the same global batch when the step model rates it faster."""

from __future__ import annotations

from mpcli.config.compose import compose
from mpcli.estimate.layout import CostModel
from mpcli.estimate.profile import profile_model
from mpcli.estimate.suggest import faster_microbatches
from tests.conftest import tiny_run

GiB = 2**30


def test_host_bound_tensor_parallel_gets_fewer_larger_microbatches() -> None:
    """At 0.9 ms per collective a tiny tp2 model with 8 microbatches of 1 is host-bound: one microbatch of
    8 issues an eighth of the collectives for the same work."""
    run = tiny_run("parallel.pp=1", "parallel.tp=2", "parallel.microbatches=8", "train.microbatch_size=1")
    profile = profile_model(run)
    found = faster_microbatches(run, profile, cuda_devices=2, cost=CostModel(), bf16=True)
    assert found is not None
    now, faster = found
    assert (faster.run.parallel.microbatches, faster.estimate.microbatch_size) == (1, 8)
    assert faster.step_time < now.step_time * 0.95
    assert faster.estimate.peak > now.estimate.peak  # a larger microbatch holds more at once
    # With memory for no more than this split holds, the larger microbatches are left out; the smaller
    # ones that fit issue more collectives: no hint.
    room = (now.estimate.peak + 1) / CostModel().headroom / GiB
    tight = faster_microbatches(run, profile, cuda_devices=2, cost=CostModel(), bf16=True, gpu_mem_gib=room)
    assert tight is None


def test_a_deep_pipeline_with_too_few_microbatches_gets_more() -> None:
    """gpt2-xl on pp4 with 4 microbatches of 16 idles 43% of the step; smaller microbatches shrink the
    bubble more than their extra stage passes cost (estimated best: 16 of 4)."""
    overrides = ["model=gpt2-xl", "parallel.pp=4", "parallel.microbatches=4", "train.microbatch_size=16"]
    run = compose("gpt2-pipeline", overrides)
    found = faster_microbatches(run, profile_model(run), cuda_devices=4, cost=CostModel(), bf16=True)
    assert found is not None
    now, faster = found
    assert faster.run.parallel.microbatches > 4 and faster.estimate.bubble < now.estimate.bubble
    assert faster.run.parallel.microbatches * faster.estimate.microbatch_size == 64  # same global batch


def test_no_hint_when_the_split_is_already_the_best() -> None:
    run = tiny_run("parallel.pp=1", "parallel.microbatches=1", "train.microbatch_size=8")
    assert faster_microbatches(run, profile_model(run), cuda_devices=1, cost=CostModel(), bf16=True) is None
