"""One pass over the model on the meta device: what each part holds and computes, per sample.

The parts are the first parts (e.g. embeddings), each block, and the last parts (e.g. final norm, head
and the loss). For each part we record

- its parameters (name, shape, owning module) — the same objects a stage holds, so a tied pair on one
  stage counts once;
- the FLOPs of its forward + backward, counted by torch's `FlopCounterMode` (as partition.py does);
- the bytes autograd saves for backward, counted with `torch.autograd.graph.saved_tensors_hooks`: each
  storage once (a view of a saved tensor costs nothing more), parameters excluded. This works for any
  family, custom ones included. It runs in float32 on the meta device, where scaled-dot-product
  attention takes its math path, so GPT-2 uses the formula in estimate/gpt2.py instead;
- the input and output size of every submodule (for tensor-parallel and pipeline communication).

Everything is per sample: each part runs on a batch of one, and every figure of these models is linear
in the batch. Blocks with the same structure and input shape are measured once (GPT-2 xl's 48 blocks
cost one pass), which keeps `mpcli plan` fast.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from mpcli.config.schema import RunConfig
from mpcli.models import build_model, family_spec, task_of
from mpcli.models.base import StagedModel
from mpcli.parallel.partition import Costs

CAST_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # autocast runs these in bf16


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    module: str  # name of the module owning it
    ident: int  # identity of the parameter object (tied parameters share it)
    cast: bool  # of a Linear/Conv: bf16 autocast keeps a bf16 copy of it during the step

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class PartProfile:
    name: str  # "first", "block 3", "last"
    params: list[ParamInfo] = field(default_factory=list)
    flops: float = 0.0  # forward + backward, per sample
    saved_float: float = 0.0  # bytes of floating-point tensors saved for backward (float32), per sample
    saved_other: float = 0.0  # bytes of other saved tensors (indices, masks), per sample
    in_numel: int = 0  # elements of the part's input, per sample
    out_numel: int = 0  # elements of the part's output, per sample
    io: dict[str, tuple[int, int]] = field(default_factory=dict)  # module -> (input, output) elements


@dataclass
class ModelProfile:
    model: StagedModel  # the whole model on the meta device (module names for tensor-parallel plans)
    first: PartProfile
    blocks: list[PartProfile]
    last: PartProfile

    def flop_costs(self, microbatch_size: int) -> Costs:
        """FLOPs of one microbatch per part, in partition.py's form (for balanced splits)."""
        b = microbatch_size
        return Costs(self.first.flops * b, [p.flops * b for p in self.blocks], self.last.flops * b)

    @property
    def n_params(self) -> int:
        """Parameters of the whole model (a tied pair once)."""
        parts = [self.first, *self.blocks, self.last]
        return sum({q.ident: q.numel for part in parts for q in part.params}.values())

    def param_costs(self) -> Costs:
        count = lambda part: float(sum(p.numel for p in part.params))  # noqa: E731
        return Costs(count(self.first), [count(p) for p in self.blocks], count(self.last))


def _part_model(model: StagedModel, *, first: bool, last: bool) -> StagedModel:
    """A view of `model` with no blocks and only the first and/or last parts (shares their modules)."""
    part = copy.copy(model)
    part._modules = dict(model._modules)  # its own module table: removing parts leaves `model` whole
    part.blocks = nn.ModuleDict()
    for name in (() if first else model.first_parts) + (() if last else model.last_parts):
        setattr(part, name, None)
    return part


def _params(module: nn.Module, prefix: str) -> list[ParamInfo]:
    infos = []
    for mod_name, mod in module.named_modules(prefix=prefix.rstrip(".")):
        for p_name, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            infos.append(ParamInfo(name, tuple(p.shape), mod_name, id(p), isinstance(mod, CAST_MODULES)))
    return infos


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    return None


def _measure(part: PartProfile, module: nn.Module, prefix: str, run: Callable[[], None]) -> None:
    """Run forward + backward of `module` once, filling the FLOPs, saved bytes and sizes of `part`."""
    param_storages = {p.untyped_storage()._cdata for p in module.parameters()}
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in seen and key not in param_storages:
            seen.add(key)
            nbytes = t.untyped_storage().nbytes()
            if t.is_floating_point():
                part.saved_float += nbytes
            else:
                part.saved_other += nbytes
        return t

    def record(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple, output: object) -> None:
            t_in, t_out = _first_tensor(args), _first_tensor(output)
            part.io[name] = (
                t_in.numel() if t_in is not None else 0,
                t_out.numel() if t_out is not None else 0,
            )

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in module.named_modules(prefix=prefix) if n]
    counter = FlopCounterMode(display=False)
    try:
        with counter, saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for handle in handles:
            handle.remove()
    part.flops = float(counter.get_total_flops())


def _example(run: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample (inputs, targets) on the meta device."""
    if family_spec(run.model.family).tokens:  # token ids; no need to read the corpus
        ids = torch.zeros(1, run.model.seq_len, dtype=torch.long, device="meta")
        return ids, ids
    from mpcli.data.datasets import load_datasets

    train_set, _ = load_datasets(run.data, run.model, seed=run.train.seed)
    inputs, targets = train_set.items([0])
    return inputs.to("meta"), targets.to("meta")


def _backward(out: torch.Tensor) -> None:
    if out.requires_grad:
        out.backward(torch.empty_like(out))


def _profile_first(model: StagedModel, inputs: torch.Tensor) -> tuple[PartProfile, torch.Tensor]:
    part_model = _part_model(model, first=True, last=False)
    part = PartProfile("first", params=_params(part_model, ""), in_numel=inputs.numel())
    outputs: list[torch.Tensor] = []

    def forward_backward() -> None:
        outputs.append(part_model(inputs))
        _backward(outputs[0])

    _measure(part, part_model, "", forward_backward)
    part.out_numel = outputs[0].numel()
    return part, outputs[0].detach()


def _profile_blocks(model: StagedModel, x: torch.Tensor) -> tuple[list[PartProfile], torch.Tensor]:
    """Each block on the previous block's output; a block like an earlier one reuses its figures."""
    parts: list[PartProfile] = []
    known: dict[tuple, tuple[PartProfile, str, torch.Tensor]] = {}
    for key, block in model.blocks.items():
        shapes = tuple((n, tuple(p.shape)) for n, p in block.named_parameters())
        signature = (repr(block), shapes, tuple(x.shape), x.dtype)
        if signature in known:
            seen, seen_key, _ = known[signature]
            part = replace(seen, name=f"block {key}", params=_params(block, f"blocks.{key}."))
            part.io = {n.replace(f"blocks.{seen_key}.", f"blocks.{key}.", 1): v for n, v in seen.io.items()}
        else:
            part, out = _profile_block(block, key, x)
            known[signature] = (part, key, out)
        parts.append(part)
        x = known[signature][2]
    return parts, x


def _profile_block(block: nn.Module, key: str, x: torch.Tensor) -> tuple[PartProfile, torch.Tensor]:
    part = PartProfile(f"block {key}", params=_params(block, f"blocks.{key}."), in_numel=x.numel())
    inputs = torch.empty_like(x).requires_grad_(x.is_floating_point())
    outputs: list[torch.Tensor] = []

    def forward_backward() -> None:
        outputs.append(block(inputs))
        _backward(outputs[0])

    _measure(part, block, f"blocks.{key}", forward_backward)
    part.out_numel = outputs[0].numel()
    return part, outputs[0].detach()


def _profile_last(run: RunConfig, model: StagedModel, x: torch.Tensor, targets: torch.Tensor) -> PartProfile:
    part_model = _part_model(model, first=False, last=True)
    part = PartProfile("last", params=_params(part_model, ""), in_numel=x.numel())
    loss_fn = task_of(run.model).loss_fn
    inputs = torch.empty_like(x).requires_grad_(x.is_floating_point())
    outputs: list[torch.Tensor] = []

    def forward_backward() -> None:
        outputs.append(part_model(inputs))
        loss_fn(outputs[0], targets).backward()

    _measure(part, part_model, "", forward_backward)
    part.out_numel = outputs[0].numel()
    return part


def profile_model(run: RunConfig) -> ModelProfile:
    """Profile every part of `run.model` per sample on the meta device (no memory, no processes)."""
    model = build_model(run.model)
    inputs, targets = _example(run)
    first, x = _profile_first(model, inputs)
    blocks, x = _profile_blocks(model, x)
    last = _profile_last(run, model, x, targets)
    return ModelProfile(model, first, blocks, last)
