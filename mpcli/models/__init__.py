"""Model families: each module builds its model on the meta device and declares a `FamilySpec`.

To add a family: write models/<name>.py with a `StagedModel` subclass, a `task(cfg)` function and a
`SPEC = FamilySpec(...)`, add its config groups under conf/model/, and add the spec to `FAMILIES`.
"""

from __future__ import annotations

import torch

from mpcli.config.schema import ModelConfig
from mpcli.errors import ConfigError
from mpcli.models import cnn, custom, gpt2, llama, mlp
from mpcli.models.base import FamilySpec, StagedModel, TaskSpec

FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec for spec in (gpt2.SPEC, llama.SPEC, mlp.SPEC, cnn.SPEC, custom.SPEC)
}


def family_spec(name: str) -> FamilySpec:
    """The spec of `model.family`; one line naming the known families for any other name."""
    if name not in FAMILIES:
        raise ConfigError(f"model.family={name}: must be one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def build_model(cfg: ModelConfig) -> StagedModel:
    """The whole model on the meta device: no memory until a stage is materialised."""
    model_cls = family_spec(cfg.family).model
    with torch.device("meta"):
        return model_cls(cfg)


def task_of(cfg: ModelConfig) -> TaskSpec:
    return family_spec(cfg.family).task(cfg)


def materialize(model: StagedModel, device: torch.device, seed: int) -> None:
    """Allocate this stage's parameters on `device` and initialise them deterministically."""
    model.to_empty(device=device)
    model.tie_weights()
    model.init_weights(seed)
