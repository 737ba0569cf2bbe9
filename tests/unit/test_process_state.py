"""The guard every test runs under notices each kind of leaked process-wide state."""

from __future__ import annotations

import logging
import os
import random

import pytest
import torch

from tests import process_state


def test_an_unchanged_process_has_no_differences() -> None:
    assert process_state.differences(process_state.snapshot(), process_state.snapshot()) == []


def test_a_scoped_inductor_patch_is_seen_inside_and_gone_after() -> None:
    before = process_state.snapshot()
    with torch._inductor.config.patch(_micro_pipeline_tp=True):
        inside = process_state.differences(before, process_state.snapshot())
    assert inside == ["torch._inductor.config: _micro_pipeline_tp"]
    assert process_state.differences(before, process_state.snapshot()) == []


def test_monkeypatch_on_a_torch_config_module_leaves_the_key_hidden() -> None:
    """Why the tests patch torch's config with `config.patch`: pytest's undo deletes the attribute."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch._inductor.config, "_micro_pipeline_tp", True)
    try:
        with pytest.raises(AttributeError, match="does not exist"):
            _ = torch._inductor.config._micro_pipeline_tp
    finally:
        torch._inductor.config._micro_pipeline_tp = False  # setting a value un-hides the key
    assert torch._inductor.config._micro_pipeline_tp is False


def test_environment_dtype_and_logging_changes_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("mpcli.process_state_probe")
    before = process_state.snapshot()
    monkeypatch.setenv("MPCLI_PROCESS_STATE_PROBE", "1")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        changed = process_state.differences(before, process_state.snapshot())
    finally:
        torch.set_default_dtype(dtype)
        logger.removeHandler(handler)
    assert "os.environ: MPCLI_PROCESS_STATE_PROBE" in changed
    assert "torch default dtype: torch.float32 -> torch.float64" in changed
    assert "logging: mpcli.process_state_probe" in changed
    assert "MPCLI_PROCESS_STATE_PROBE" in os.environ  # monkeypatch undoes it before the guard looks


def test_rng_restored_puts_every_generator_back() -> None:
    state = torch.get_rng_state()
    python_state = random.getstate()
    with process_state.rng_restored():
        torch.manual_seed(1234)
        random.seed(1234)
        torch.rand(10)
        random.random()
    assert torch.equal(torch.get_rng_state(), state)
    assert random.getstate() == python_state
