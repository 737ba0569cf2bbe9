"""GlobalSampler over token windows (deterministic, restartable, reshardable) and the token-file reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mpcli.config.schema import DataConfig
from mpcli.data.datasets import load_tokens, token_file
from mpcli.data.sampler import GlobalSampler, TokenWindows
from mpcli.data.token_file import LLMC_MAGIC, token_file_layout
from mpcli.errors import ConfigError

SEQ_LEN = 8
N_WINDOWS = 10
# Token i has value i, so a row tells which window it came from (window w starts at w * SEQ_LEN).
TOKENS = np.arange(N_WINDOWS * SEQ_LEN + 1, dtype=np.int64)


def sampler(*, local_batch: int = 3, dp: int = 1, dp_rank: int = 0, seed: int = 0) -> GlobalSampler:
    windows = TokenWindows(TOKENS, SEQ_LEN)
    return GlobalSampler(windows, local_batch=local_batch, dp=dp, dp_rank=dp_rank, seed=seed)


def windows(inputs: torch.Tensor) -> list[int]:
    """Window index of every row."""
    assert torch.all(inputs[:, 0] % SEQ_LEN == 0)
    return (inputs[:, 0] // SEQ_LEN).tolist()


def test_batch_shape_and_dtype() -> None:
    inputs, targets = sampler(local_batch=3).batch(0)
    assert inputs.shape == targets.shape == (3, SEQ_LEN)
    assert inputs.dtype == targets.dtype == torch.int64


def test_rows_are_whole_windows_and_targets_are_shifted_inputs() -> None:
    s = sampler(local_batch=4)
    for step in range(6):
        inputs, targets = s.batch(step)
        starts = inputs[:, :1]
        assert torch.equal(inputs, starts + torch.arange(SEQ_LEN))  # contiguous tokens of one window
        assert torch.equal(targets[:, :-1], inputs[:, 1:])
        assert torch.equal(targets, inputs + 1)  # the last target is the token after the window


def test_deterministic_for_a_seed() -> None:
    a, b = sampler(seed=7), sampler(seed=7)
    for step in range(5):
        assert torch.equal(a.batch(step)[0], b.batch(step)[0])
    other = sampler(seed=8)
    assert any(not torch.equal(a.batch(s)[0], other.batch(s)[0]) for s in range(5))


def test_batches_are_shuffled() -> None:
    order = [w for step in range(2) for w in windows(sampler(local_batch=5).batch(step)[0])]
    assert sorted(order) == list(range(N_WINDOWS))
    assert order != list(range(N_WINDOWS))


@pytest.mark.parametrize("restart_step", [0, 1, 3, 4, 9])
def test_restart_at_any_step_gives_the_same_batch(restart_step: int) -> None:
    first_run = sampler(seed=3)
    expected = [first_run.batch(step) for step in range(12)]
    restarted = sampler(seed=3)
    for step in range(restart_step, 12):
        inputs, targets = restarted.batch(step)
        assert torch.equal(inputs, expected[step][0])
        assert torch.equal(targets, expected[step][1])


def test_out_of_order_access_across_epochs() -> None:
    # Jumping back and forth between epochs (the permutation cache) changes nothing.
    reference = [sampler(seed=1).batch(step)[0] for step in (9, 0, 9)]
    s = sampler(seed=1)
    assert torch.equal(s.batch(9)[0], reference[0])
    assert torch.equal(s.batch(0)[0], reference[1])
    assert torch.equal(s.batch(9)[0], reference[2])


@pytest.mark.parametrize("dp", [2, 5])
@pytest.mark.parametrize("step", [0, 1, 3, 7])
def test_resharding_keeps_the_global_batch(dp: int, step: int) -> None:
    """dp ranks' batches, concatenated rank 0 first, are the dp=1 batch of the same step."""
    global_batch = 2 * dp
    single = sampler(local_batch=global_batch, seed=5).batch(step)
    shards = [sampler(local_batch=2, dp=dp, dp_rank=r, seed=5).batch(step) for r in range(dp)]
    assert torch.equal(torch.cat([inputs for inputs, _ in shards]), single[0])
    assert torch.equal(torch.cat([targets for _, targets in shards]), single[1])


def test_ranks_get_disjoint_samples() -> None:
    a = windows(sampler(local_batch=2, dp=2, dp_rank=0, seed=5).batch(0)[0])
    b = windows(sampler(local_batch=2, dp=2, dp_rank=1, seed=5).batch(0)[0])
    assert not set(a) & set(b)


def test_epoch_wrap_around() -> None:
    s = sampler(local_batch=4, seed=2)  # 10 windows: step 2 holds samples 8..11 and crosses the epoch
    order = [w for step in range(5) for w in windows(s.batch(step)[0])]  # samples 0..19: two epochs
    epoch0, epoch1 = order[:N_WINDOWS], order[N_WINDOWS:]
    assert sorted(epoch0) == sorted(epoch1) == list(range(N_WINDOWS))  # every window once per epoch
    assert epoch0 != epoch1  # reshuffled each epoch
    # Far past the end of the data still works and repeats nothing within an epoch.
    far = [w for step in range(100, 105) for w in windows(s.batch(step)[0])]
    assert sorted(far[:N_WINDOWS]) == list(range(N_WINDOWS))


def test_too_few_tokens_for_one_window() -> None:
    with pytest.raises(ValueError, match="no window"):
        TokenWindows(np.arange(SEQ_LEN), SEQ_LEN)


def test_exactly_one_window() -> None:
    inputs, targets = GlobalSampler(TokenWindows(np.arange(SEQ_LEN + 1), SEQ_LEN), local_batch=2).batch(0)
    assert torch.equal(inputs, torch.arange(SEQ_LEN).repeat(2, 1))
    assert torch.equal(targets, inputs + 1)


# --- token files -------------------------------------------------------------------------------------

STREAM = np.array([0, 1, 2, 50256, 65535, 7, 300, 12], dtype=np.uint16)


def test_token_file_reads_nanogpt_bin(tmp_path: Path) -> None:
    path = tmp_path / "train.bin"
    STREAM.tofile(path)
    tokens = token_file(str(path))
    assert tokens.dtype == np.uint16
    np.testing.assert_array_equal(tokens, STREAM)


def test_token_file_skips_llmc_header(tmp_path: Path) -> None:
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [LLMC_MAGIC, 1, len(STREAM)]  # magic, version, token count
    path = tmp_path / "train.llmc.bin"
    path.write_bytes(header.tobytes() + STREAM.tobytes())
    assert LLMC_MAGIC == 20240520
    np.testing.assert_array_equal(token_file(str(path)), STREAM)


def test_token_file_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # validate() accepts data.path=~/...; the reader must open the same file.
    monkeypatch.setenv("HOME", str(tmp_path))
    STREAM.tofile(tmp_path / "train.bin")
    np.testing.assert_array_equal(token_file("~/train.bin"), STREAM)


def test_load_tokens_splits_train_and_eval(tmp_path: Path) -> None:
    stream = np.arange(100, dtype=np.uint16)
    stream.tofile(tmp_path / "t.bin")
    splits = load_tokens(DataConfig(name="tokens", path=str(tmp_path / "t.bin"), eval_fraction=0.1))
    assert (len(splits.train), len(splits.eval)) == (90, 10)
    np.testing.assert_array_equal(np.concatenate([splits.train, splits.eval]), stream)


def llmc_file(path: Path, tokens: np.ndarray, *, version: int = 1, count: int | None = None) -> Path:
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [LLMC_MAGIC, version, len(tokens) if count is None else count]
    path.write_bytes(header.tobytes() + tokens.tobytes())
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_bytes(STREAM.tobytes() + b"x"), "17 bytes is not a whole number of uint16 tokens"),
        (lambda p: llmc_file(p, STREAM, version=2), "llm.c token file version 2"),
        (lambda p: llmc_file(p, STREAM, count=9), "announces 9 tokens but 16 bytes follow it"),
        (lambda p: llmc_file(p, STREAM[:-1], count=-1), "announces -1 tokens"),
    ],
)
def test_a_token_file_that_does_not_fit_its_dtype_is_one_line(
    tmp_path: Path, make: Callable[[Path], object], fragment: str
) -> None:
    path = tmp_path / "t.bin"
    make(path)
    with pytest.raises(ConfigError, match=f"^data.path=x: .*{fragment}"):
        token_file_layout(path, "data.path=x")


def test_token_ids_beyond_the_vocab_are_named_at_the_first_batch() -> None:
    windows = TokenWindows(STREAM, seq_len=3, vocab=50257)
    windows.items([0])  # ids up to 50256
    with pytest.raises(ValueError, match="token id 65535 is >= model.vocab=50257; .*set model.vocab"):
        windows.items([1])
