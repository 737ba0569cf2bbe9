"""Model families: each file builds its model on the meta device and says how it is trained.

To add a family: write models/<name>.py with a `StagedModel` subclass and a `task(cfg)` function,
and register both here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mpcli.config.schema import ModelConfig
from mpcli.models import cnn, custom, gpt2, mlp
from mpcli.models.base import StagedModel, TaskSpec

FAMILIES: dict[str, tuple[type[StagedModel], Callable[[ModelConfig], TaskSpec]]] = {
    "gpt2": (gpt2.GPT2, gpt2.task),
    "mlp": (mlp.MLPNet, mlp.task),
    "cnn": (cnn.ConvNet, cnn.task),
    "custom": (custom.CustomModel, custom.task),
}


def build_model(cfg: ModelConfig) -> StagedModel:
    """The whole model on the meta device: no memory until a stage is materialised."""
    model_cls, _ = FAMILIES[cfg.family]
    with torch.device("meta"):
        return model_cls(cfg)


def task_of(cfg: ModelConfig) -> TaskSpec:
    return FAMILIES[cfg.family][1](cfg)


def materialize(model: StagedModel, device: torch.device, seed: int) -> None:
    """Allocate this stage's parameters on `device` and initialise them deterministically."""
    model.to_empty(device=device)
    model.tie_weights()
    model.init_weights(seed)
