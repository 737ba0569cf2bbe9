"""Model families. Each family builds its full model on the meta device and can keep one stage."""

from __future__ import annotations

import torch

from mpcli.config.schema import ModelConfig
from mpcli.models.gpt2 import GPT2, init_weights

FAMILIES = {"gpt2": (GPT2, init_weights)}


def build_model(cfg: ModelConfig) -> GPT2:
    """The whole model on the meta device: no memory until a stage is materialised."""
    model_cls, _ = FAMILIES[cfg.family]
    with torch.device("meta"):
        return model_cls(cfg)


def materialize(model: GPT2, device: torch.device, seed: int) -> None:
    """Allocate this stage's parameters on `device` and initialise them deterministically."""
    _, init = FAMILIES[model.cfg.family]
    model.to_empty(device=device)
    model.tie_weights()  # to_empty keeps sharing, but re-tie so the intent is explicit
    init(model, seed)
