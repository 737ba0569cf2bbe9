"""Bring your own model: `model._target_` builds it, `model.blocks` lists the submodules to chain.

`model._target_` names an nn.Module class, or a factory the user trusts (see config/target.py).
The listed submodules, applied one after another, must compute the model's forward; each is one
block for pipeline splits. Tensor parallelism comes from `parallel.tp_plan` patterns over the block
names (`blocks.<index>.<path inside the block>`). Weights are re-initialised after the meta-device
build by each submodule's own `reset_parameters`, seeded per module name so every layout agrees.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from mpcli.config.schema import ModelConfig
from mpcli.config.target import resolve_target
from mpcli.errors import ConfigError
from mpcli.models.base import FamilySpec, StagedModel, TaskSpec, classification_loss, mse_loss


class CustomModel(StagedModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        module = resolve_target(str(cfg._target_))(**cfg.kwargs)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"model._target_={cfg._target_} returned {type(module).__name__}, not an nn.Module"
            )
        self.blocks = nn.ModuleDict({str(i): _submodule(module, path) for i, path in enumerate(cfg.blocks)})

    def all_block_ids(self) -> list[int]:
        return list(range(len(self.cfg.blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x

    def init_weights(self, seed: int) -> None:
        for name, module in self.named_modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                torch.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
                reset()


def _submodule(module: nn.Module, path: str) -> nn.Module:
    try:
        return module.get_submodule(path)
    except AttributeError:
        children = ", ".join(name for name, _ in module.named_children())
        raise ConfigError(
            f"model.blocks: {path} is not a submodule of the model; its top level has {children}"
        ) from None


def task(cfg: ModelConfig) -> TaskSpec:
    loss = classification_loss if cfg.loss == "cross_entropy" else mse_loss
    return TaskSpec(loss_fn=loss, tokens_per_sample=1, accuracy=cfg.loss == "cross_entropy")


def _check(cfg: ModelConfig) -> None:
    from mpcli.config.layout_checks import one_of

    if not cfg._target_:
        raise ConfigError("model._target_: required for model.family=custom (pkg.module.Class)")
    if not cfg.blocks:
        raise ConfigError("model.blocks: list the submodules that, chained, compute the forward")
    one_of("model.loss", cfg.loss, ("cross_entropy", "mse"))


SPEC = FamilySpec(name="custom", model=CustomModel, task=task, check=_check, user_code=True)
