"""Checkpoint directories: atomic commit, latest, pruning, partial saves, safe metadata, validation."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from mpcli.checkpoint import store
from mpcli.checkpoint.parts import restore_schedule
from mpcli.config.schema import TrainConfig
from mpcli.config.validate import validate
from mpcli.data.sampler import GlobalSampler, TokenWindows
from mpcli.errors import ConfigError
from mpcli.train.optim import build_lr_schedule
from tests.ckpt_util import tiny_model, write_checkpoint


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / store.CHECKPOINTS


def test_commit_makes_latest_and_prune_keeps_the_newest(root: Path) -> None:
    model = tiny_model()
    for step in (2, 4, 6):
        write_checkpoint(model, root, step)
        assert store.latest(root) == root / store.step_name(step)
    assert store.prune(root, keep=2) == [root / store.step_name(2)]
    assert [store.read_meta(p).step for p in store.list_checkpoints(root)] == [4, 6]
    assert store.prune(root, keep=0) == []  # keep=0 keeps everything


def test_partial_saves_are_never_latest_and_are_cleaned(root: Path) -> None:
    write_checkpoint(tiny_model(), root, 2)
    partial = root / (store.step_name(4) + store.PARTIAL)
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"half a shard")
    (root / store.LATEST).write_text(store.step_name(4))  # even if "latest" pointed at it
    assert store.latest(root) == root / store.step_name(2)
    assert store.list_checkpoints(root) == [root / store.step_name(2)]
    assert store.clean_partials(root) == [partial] and not partial.exists()


def test_resolve_accepts_a_checkpoint_a_checkpoints_dir_or_a_run_dir(root: Path, tmp_path: Path) -> None:
    first = write_checkpoint(tiny_model(), root, 2)
    second = write_checkpoint(tiny_model(), root, 4)
    assert store.resolve(first) == first
    assert store.resolve(root) == second
    assert store.resolve(tmp_path) == second
    assert store.resolve(tmp_path / "elsewhere") is None


def test_the_same_step_saved_again_replaces_the_old_one(root: Path) -> None:
    write_checkpoint(tiny_model(seed=1), root, 2)
    again = write_checkpoint(tiny_model(seed=2), root, 2)
    assert store.list_checkpoints(root) == [again]
    assert not list(root.glob("*.stale"))


def test_metadata_pickles_cannot_run_code(root: Path, tmp_path: Path) -> None:
    path = write_checkpoint(tiny_model(), root, 2)
    assert store.tensors(path, store.MODEL)["wte.weight"].shape == (256, 32)

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (path / store.DCP_METADATA).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        store.tensors(path)
    assert not (tmp_path / "pwned").exists()


def test_restore_schedule_matches_a_schedule_that_ran() -> None:
    train = TrainConfig(steps=20, warmup=5, lr=0.1)
    ran = build_lr_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.lr), train)
    for _ in range(7):
        ran.optimizer.step()
        ran.step()
    fresh = build_lr_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.lr), train)
    assert isinstance(fresh, LambdaLR)
    restore_schedule(fresh, 7)
    assert fresh.get_last_lr() == ran.get_last_lr()
    assert fresh.optimizer.param_groups[0]["lr"] == ran.optimizer.param_groups[0]["lr"]
    ran.step()
    fresh.step()
    assert fresh.get_last_lr() == ran.get_last_lr()


def test_sampler_offset_continues_at_a_global_sample() -> None:
    """2 steps of 8 samples were done (next sample 16); the resumed run takes 4 per step from step 2."""
    data = TokenWindows(torch.arange(1000).numpy(), seq_len=4)
    before = GlobalSampler(data, local_batch=8, seed=3)
    after = GlobalSampler(data, local_batch=4, seed=3, offset=16 - 2 * 4)
    assert torch.equal(after.batch(2)[0], before.batch(2)[0][:4])
    assert torch.equal(after.batch(3)[0], before.batch(2)[0][4:])


def test_validate_rejects_a_missing_or_incompatible_checkpoint(tiny: type, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^checkpoint.resume=/nowhere: no complete checkpoint there"):
        validate(tiny("checkpoint.resume=/nowhere"), cuda_devices=0)
    path = write_checkpoint(tiny_model(), tmp_path / store.CHECKPOINTS, 2)  # d_model=32, 2 blocks
    run = tiny(f"checkpoint.resume={path}", "model.d_model=64", "model.n_layer=2")
    with pytest.raises(
        ConfigError, match=r"tensor model.wte.weight has shape \[256, 32\] there but \[256, 64\]"
    ):
        validate(run, cuda_devices=0)
    with pytest.raises(ConfigError, match=r"has no tensor model.blocks.2.ln_1.weight"):
        validate(tiny(f"checkpoint.resume={tmp_path}", "model.n_layer=4"), cuda_devices=0)
    validate(tiny(f"checkpoint.resume={tmp_path}", "model.n_layer=2"), cuda_devices=0)


def test_validate_checks_checkpoint_numbers(tiny: type) -> None:
    with pytest.raises(ConfigError, match=r"^checkpoint.every=-1: must be >= 0$"):
        validate(tiny("checkpoint.every=-1"), cuda_devices=0)
    run = tiny()
    assert run.checkpoint.resume == "auto" and run.checkpoint.dir is None
    assert replace(run.checkpoint, keep=1).keep == 1
