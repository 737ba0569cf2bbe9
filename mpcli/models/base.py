"""What every model family provides so that mpcli can split, shard and train it.

A family's model is `first parts -> ordered blocks -> last parts`. Blocks live in a ModuleDict keyed by
the global block index, so each pipeline stage keeps the full model's parameter names; the parts a
stage does not own are set to None. The tensor-parallel plan is data: module-name pattern -> style.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mpcli.config.schema import ModelConfig
from mpcli.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the last dim: logits (..., C), integer targets (...)."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten())


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs.float(), targets.float())


class StagedModel(nn.Module):
    """Base of every family: owns the pipeline pruning and the deterministic initialisation."""

    blocks: nn.ModuleDict
    first_parts: tuple[str, ...] = ()  # attributes that live on the first stage only
    last_parts: tuple[str, ...] = ()  # attributes that live on the last stage only
    residual_projections: tuple[str, ...] = ()  # weights whose init std is scaled by depth

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def keep_stage(self, block_ids: list[int], *, first: bool, last: bool) -> None:
        """Remove everything this pipeline stage does not own (call on the meta device)."""
        for key in [k for k in self.blocks if int(k) not in block_ids]:
            del self.blocks[key]
        for name in () if first else self.first_parts:
            setattr(self, name, None)
        for name in () if last else self.last_parts:
            setattr(self, name, None)

    def tie_weights(self) -> None:
        """Families with tied parameters re-tie them here (after materialising or sharding)."""

    @property
    def head_is_separate_copy(self) -> bool:
        """True on a last stage holding a copy of a parameter tied to the first stage."""
        return False

    def tied_pair(self) -> list[nn.Parameter]:
        """This stage's side of a parameter tied across the first and last stage (none by default)."""
        return []

    def init_key(self, name: str) -> str:
        """The name whose seeded values a parameter takes (a tied copy takes its original's)."""
        return name

    def init_std(self, name: str) -> float | None:
        """Normal std for weights; None for biases and norms (zeros / ones)."""
        if name.endswith(".bias") or "norm" in name or ".ln" in f".{name}":
            return None
        if self.residual_projections and name.endswith(self.residual_projections):
            return 0.02 / math.sqrt(2 * len(self.all_block_ids()))
        return self.weight_std(name)

    def weight_std(self, name: str) -> float:
        """He-style fan-in std for linear/convolution weights; families may override."""
        param = self.get_parameter(name)
        fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else param.shape[0]
        return math.sqrt(2.0 / fan_in)

    def init_weights(self, seed: int) -> None:
        """Deterministic per parameter name, so every layout starts from the same weights."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                key = self.init_key(name)
                std = self.init_std(key)
                if std is None:
                    param.fill_(1.0 if name.endswith("weight") else 0.0)
                    continue
                gen = torch.Generator(device=param.device)
                gen.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
                param.normal_(0.0, std, generator=gen)

    def all_block_ids(self) -> list[int]:
        return list(range(self.cfg.n_layer))

    def flops_per_sample(self) -> float:
        """Training FLOPs (forward + backward) per sample of the whole model: 6 x parameters by default
        (2 per multiply-add forward, twice that backward); families with more work per parameter
        (attention, convolutions) override it."""
        return 6.0 * sum(p.numel() for p in self.parameters())

    def tp_plan(self, parallel_sequence: bool) -> dict[str, str]:
        """Module-name pattern -> style name (see parallel/tensor.py); empty = no tensor parallelism."""
        return {}


class LanguageModel(StagedModel):
    """A model whose first-stage token embedding may be tied to its last-stage output head
    (`model.tie_embeddings`): one parameter on one stage, a synced copy across two."""

    embedding_name = "wte"  # the attribute holding the token embedding
    head: nn.Linear | None
    # The family's tensor-parallel plans (module pattern -> style): without, then with sequence parallel.
    plans: tuple[dict[str, str], dict[str, str]] = ({}, {})

    def tp_plan(self, sequence_parallel: bool) -> dict[str, str]:
        return dict(self.plans[sequence_parallel])

    def _embedding(self) -> nn.Embedding | None:
        return getattr(self, self.embedding_name)

    def tie_weights(self) -> None:
        """Share the embedding with the head when both live on this stage."""
        embedding = self._embedding()
        if self.cfg.tie_embeddings and embedding is not None and self.head is not None:
            self.head.weight = embedding.weight

    @property
    def head_is_separate_copy(self) -> bool:
        return self.cfg.tie_embeddings and self.head is not None and self._embedding() is None

    def tied_pair(self) -> list[nn.Parameter]:
        """The embedding on a first stage and the head copy on a last stage, when not the same stage."""
        embedding = self._embedding()
        if not self.cfg.tie_embeddings or (embedding is not None and self.head is not None):
            return []
        if embedding is not None:
            return [embedding.weight]
        return [self.head.weight] if self.head is not None else []

    def init_key(self, name: str) -> str:
        tied = name == "head.weight" and self.cfg.tie_embeddings
        return f"{self.embedding_name}.weight" if tied else name

    def weight_std(self, name: str) -> float:
        return 0.02

    def matmul_params(self) -> int:
        """Weights that multiply each token's activations (the embedding lookup excluded)."""
        raise NotImplementedError

    def flops_per_sample(self) -> float:
        """6 N per token (N = `matmul_params`) + causal attention's 12 L d T, times T tokens."""
        c = self.cfg
        return (6 * self.matmul_params() + 12 * c.n_layer * c.d_model * c.seq_len) * c.seq_len


def language_task(cfg: ModelConfig) -> TaskSpec:
    """Next-token prediction: cross entropy over the vocabulary, seq_len tokens a sample."""
    return TaskSpec(loss_fn=classification_loss, tokens_per_sample=cfg.seq_len, accuracy=False)


@dataclass(frozen=True)
class TaskSpec:
    """How a family is trained and measured."""

    loss_fn: LossFn
    # Positions per sample that count as "tokens" for throughput (seq_len for LMs, 1 otherwise).
    tokens_per_sample: int
    # Report eval accuracy (classification tasks).
    accuracy: bool


Divisible = list[tuple[str, int]]  # (config key, value) pairs that parallel.tp must divide


def _nothing_divisible(cfg: ModelConfig, sequence_parallel: bool) -> Divisible:
    return []


def _no_checks(cfg: ModelConfig) -> None:
    return None


@dataclass(frozen=True)
class HFAdapter:
    """How a family's weights sit in a Hugging Face `transformers` state dict.

    `marker` recognises the layout (a key only that layout has; group 1 is an optional key prefix);
    `source(name, cfg, prefix)` gives, for mpcli's parameter `name`, the file key and the transform from
    the file's tensor to mpcli's; `to_hf` and `config` write the other way (`checkpoint export --format
    hf`)."""

    marker: re.Pattern[str]
    source: Callable[[str, ModelConfig, str], tuple[str, Transform]]
    # mpcli's full state dict (a tied head stored once) -> transformers' state dict, and its config.json.
    to_hf: Callable[[dict[str, torch.Tensor], ModelConfig], dict[str, torch.Tensor]]
    config: Callable[[ModelConfig], dict[str, object]]


def keep(t: torch.Tensor) -> torch.Tensor:
    return t


def pad_rows(rows: int) -> Transform:
    """Zero rows appended up to `rows` (a vocabulary padded to a multiple of 64)."""

    def pad(t: torch.Tensor) -> torch.Tensor:
        missing = rows - t.shape[0]
        return torch.cat([t, t.new_zeros(missing, *t.shape[1:])]) if missing > 0 else t

    return pad


@dataclass(frozen=True)
class FamilySpec:
    """Everything mpcli needs to know about a model family, declared once in the family's module.

    Nothing outside the family's module tests a family's name: validation, the planner, the trainer and
    the checkpoint code ask the spec.
    """

    name: str
    model: type[StagedModel]
    task: Callable[[ModelConfig], TaskSpec]
    # Data sets (data.name) the family trains on; empty: any.
    data: tuple[str, ...] = ()
    # Inputs are token ids (B, T) over a vocabulary: sequence parallelism, loss parallelism and a
    # vocabulary-sharded head apply, and profiling feeds token ids.
    tokens: bool = False
    # The family honours model.tie_embeddings (a first-stage embedding tied to a last-stage head).
    ties_embeddings: bool = False
    # Family-specific config checks (raise ConfigError naming the key).
    check: Callable[[ModelConfig], None] = _no_checks
    # Config values parallel.tp must divide (the flag: under sequence parallelism).
    tp_divisible: Callable[[ModelConfig, bool], Divisible] = _nothing_divisible
    # Why tensor parallelism is refused for this family (None: it has a plan).
    no_tp: str | None = None
    # Built from the user's code named by model._target_ (bring your own): mpcli imports it only for
    # commands that build models, and its tensor-parallel plan comes from parallel.tp_plan alone.
    user_code: bool = False
    # The analytic activation-memory formula the planner may use (see estimate/stages.py); None:
    # measured on the meta device.
    activation_formula: str | None = None
    hf: HFAdapter | None = None


SIZE_KEYS = ("n_layer", "n_head", "d_model", "seq_len", "vocab", "n_classes", "in_features", "channels")


def check_sizes(cfg: ModelConfig) -> None:
    """The size keys every built-in family reads are positive; dropout is a probability."""
    from mpcli.config.layout_checks import positive

    for key in SIZE_KEYS:
        positive(f"model.{key}", getattr(cfg, key))
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"model.dropout={cfg.dropout}: must be in [0, 1)")
