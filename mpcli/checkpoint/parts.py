"""The Stateful parts of a training run, as the checkpointer (state.py) saves and loads them.

Each part has `state_dict()` (what it saves) and `load_state_dict()`; the training loop builds them
around its own objects and hands them over as a mapping, so nothing here knows the trainer.

Model and optimizer keys are layout-free: the full model's parameter names, a tied copy stored once
under its original's name (`init_key`). A part that holds such a copy without its original (a
pipeline's last stage holding `head.weight`) does not save it but must load it: `load_targets()`
names every tensor it fills, copies included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR

from mpcli.data.sampler import GlobalSampler
from mpcli.errors import ConfigError
from mpcli.models.base import StagedModel

# One key per parameter and hyperparameter, so pipeline stages never collide on a param-group index.
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)

StateDict = dict[str, Any]
Entries = list[tuple[str, str, bool]]  # (layout-free key, name in the live state dict, original?)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy a loaded tensor into a live one (a tied copy may be sharded differently)."""
    if _local(dst).data_ptr() == _local(src).data_ptr() and dst.shape == src.shape:
        return  # loaded in place already
    if isinstance(dst, DTensor) and isinstance(src, DTensor) and dst.placements != src.placements:
        src = src.redistribute(dst.device_mesh, dst.placements)
    with torch.no_grad():
        dst.copy_(src)


def _first_per_key(entries: Entries, values: StateDict) -> StateDict:
    """{key: value} of (key, local name, original) entries, originals first where both are here."""
    targets: StateDict = {}
    for key, name, _ in sorted(entries, key=lambda entry: not entry[2]):
        targets.setdefault(key, values[name])
    return targets


class _KeyedState:
    """A part whose live state dict is saved under layout-free keys: only originals are saved, and a
    tied copy loads its original's value. Subclasses say how to get and set the live state dict."""

    def _entries(self) -> tuple[StateDict, Entries]:
        raise NotImplementedError

    def _set(self, live: StateDict) -> None:
        raise NotImplementedError

    def state_dict(self) -> StateDict:
        live, entries = self._entries()
        return {key: live[name] for key, name, original in entries if original}

    def load_targets(self) -> StateDict:
        live, entries = self._entries()
        return _first_per_key(entries, live)

    def load_state_dict(self, state: StateDict) -> None:
        live, entries = self._entries()
        for key, name, _ in entries:
            if key in state:
                _copy(live[name], state[key])
        self._set(live)


class ModelState(_KeyedState):
    """This rank's pipeline stages as one part, keyed by the full model's parameter names."""

    def __init__(self, parts: Sequence[StagedModel]) -> None:
        self.parts = list(parts)
        # The state dict helpers take one module: hold this rank's stages under their index.
        self.stages = nn.ModuleDict({str(i): part for i, part in enumerate(self.parts)})

    def key(self, fqn: str) -> tuple[str, bool]:
        """'<stage>.<name>' -> (the layout-free name, whether this is the original of a tied pair)."""
        index, _, name = fqn.partition(".")
        key = self.parts[int(index)].init_key(name)
        return key, key == name

    def _entries(self) -> tuple[StateDict, Entries]:
        """(this rank's state dict, its (key, local name, original) entries)."""
        local = get_model_state_dict(self.stages)
        return local, [(key, fqn, original) for fqn in local for key, original in [self.key(fqn)]]

    def _set(self, live: StateDict) -> None:
        set_model_state_dict(self.stages, live)


class OptimizerState(_KeyedState):
    """The optimizer's per-parameter state (`<parameter>.<state>`, flattened). Hyperparameters are
    not saved: they come from the config, the learning rate from the LR schedule's own part."""

    def __init__(self, model: ModelState, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def _entries(self) -> tuple[StateDict, Entries]:
        """(the flattened optimizer state dict, its (key, flat name, original) entries)."""
        flat = get_optimizer_state_dict(self.model.stages, self.optimizer, options=FLAT)
        entries = []
        for name in flat:
            if name.startswith("state."):
                fqn, _, state = name.removeprefix("state.").rpartition(".")
                key, original = self.model.key(fqn)
                entries.append((f"{key}.{state}", name, original))
        return flat, entries

    def _set(self, live: StateDict) -> None:
        set_optimizer_state_dict(self.model.stages, self.optimizer, live, options=FLAT)


def restore_schedule(schedule: LambdaLR, step: int) -> None:
    """Put a LambdaLR (and its optimizer's learning rates) where it is after `step` steps."""
    lrs = [base * fn(step) for base, fn in zip(schedule.base_lrs, schedule.lr_lambdas, strict=True)]
    state = schedule.state_dict()
    state.update(last_epoch=step, _step_count=step + 1, _last_lr=lrs)
    schedule.load_state_dict(state)
    for group, lr in zip(schedule.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


# Schedule state with one value per optimizer param group.
PER_GROUP = ("base_lrs", "_last_lr")


class LRScheduleState:
    """A LambdaLR's state (base LRs, position, last LRs) as plain numbers for meta.json. The lambdas
    hold no state: they are rebuilt from the config.

    Param groups depend on the layout (sharded and plain parameters go into separate groups), so a
    checkpoint may hold another number of per-group values than this layout has groups: values that
    are the same for every group (as build_optimizer makes them) apply to any number of groups."""

    def __init__(self, schedule: LambdaLR) -> None:
        self.schedule = schedule

    def state_dict(self) -> StateDict:
        return {k: v for k, v in self.schedule.state_dict().items() if k != "lr_lambdas"}

    def _per_group(self, key: str, values: list[float]) -> list[float]:
        groups = len(self.schedule.optimizer.param_groups)
        if len(values) == groups:
            return list(values)
        if len(set(values)) == 1:
            return [values[0]] * groups
        raise ConfigError(
            f"checkpoint: the LR schedule's {key} has {len(values)} different values, one per param "
            f"group of the layout that saved it; this layout has {groups} groups"
        )

    def load_state_dict(self, state: StateDict) -> None:
        # Start from the live state, so the lambdas and anything a newer torch adds stay as built.
        full = self.schedule.state_dict()
        full.update(state)
        full.update({key: self._per_group(key, state[key]) for key in PER_GROUP if key in state})
        self.schedule.load_state_dict(full)
        # The optimizer's learning rates are the schedule's last ones (its hyperparameters are not
        # restored from the checkpoint).
        for group, lr in zip(self.schedule.optimizer.param_groups, self.schedule.get_last_lr(), strict=True):
            group["lr"] = lr

    def restore_step(self, step: int) -> None:
        """For checkpoints saved without the schedule's state: derive it from the step."""
        restore_schedule(self.schedule, step)


class RngState:
    """This rank's random number generators, under `<rank>.cpu` and `<rank>.cuda`."""

    def __init__(self, rank: int, device: torch.device, seed: int) -> None:
        self.rank, self.device, self.seed = rank, device, seed

    def state_dict(self) -> StateDict:
        state = {f"{self.rank}.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state[f"{self.rank}.cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: StateDict) -> None:
        for key, value in state.items():
            if key.endswith(".cpu"):
                torch.set_rng_state(value)
            else:
                torch.cuda.set_rng_state(value, self.device)

    def restore_step(self, step: int) -> None:
        """Where the saved streams do not apply (another layout): seed from the step, every rank
        alike as a fresh run does, so dropout does not replay the first steps' masks."""
        torch.manual_seed(self.seed + step)


@dataclass
class DataPosition:
    """How far the run is through its data: steps done and the global index of the next sample.
    The index is layout-free: a resume under another global batch size continues at that sample."""

    sampler: GlobalSampler
    tokens_per_sample: int
    step: int = 0  # optimizer steps done; the training loop advances it

    def state_dict(self) -> StateDict:
        samples = self.sampler.offset + self.step * self.sampler.global_batch
        return {"step": self.step, "samples": samples, "tokens": samples * self.tokens_per_sample}

    def load_state_dict(self, state: StateDict) -> None:
        self.step = state["step"]
        self.sampler.offset = state["samples"] - self.step * self.sampler.global_batch
