"""Worker tasks for the distributed tests: run inside processes started by `mpcli.launch.launch`.

All layouts of one world size run inside one spawn (a spawn costs seconds on 2 cores). Results go to
files in the run directory; the tests judge those files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.distributed.tensor import DTensor, Replicate

from mpcli.config.schema import RunConfig
from mpcli.parallel.schedules import SPECS
from mpcli.parallel.speed import plain_name
from mpcli.parallel.tensor import reduce_partial_grads
from mpcli.topology import ParallelDims
from mpcli.train.loop import _samplers
from mpcli.train.step import Trainer

STEPS = 3

# Per family: the model/data overrides that make a gloo step take milliseconds.
FAMILY_OVERRIDES = {
    "gpt2": [],
    "mlp": ["model.family=mlp", "model.d_model=32", "model.in_features=16", "data.name=synthetic"],
    "cnn": ["model.family=cnn", "model.channels=8", "model.image_size=16", "data.name=shapes"],
    # Grouped-query attention (2 query heads per key/value head) and an untied head.
    "llama": [
        "model.family=llama",
        "model.n_head=4",
        "model.n_kv_head=2",
        "model.ffn_hidden=64",
        "model.tie_embeddings=false",
    ],  # fmt: skip
}


@dataclass(frozen=True)
class Layout:
    family: str = "gpt2"
    pp: int = 1
    dp: int = 1
    tp: int = 1
    schedule: str = "gpipe"
    virtual_stages: int = 1
    sequence_parallel: bool = False
    loss_parallel: bool = True
    activation_checkpointing: str = "none"

    @property
    def world(self) -> int:
        return self.pp * self.dp * self.tp

    @property
    def name(self) -> str:
        parts = [self.family, f"pp{self.pp}", f"dp{self.dp}", f"tp{self.tp}", self.schedule]
        parts += [f"v{self.virtual_stages}"] if self.virtual_stages > 1 else []
        parts += ["sp"] if self.sequence_parallel else []
        parts += ["nolp"] if self.tp > 1 and not self.loss_parallel else []
        parts += [f"ac-{self.activation_checkpointing}"] if self.activation_checkpointing != "none" else []
        return "-".join(parts)


def reference(family: str) -> Layout:
    return Layout(family=family)


LAYOUTS: list[Layout] = [
    *(reference(f) for f in FAMILY_OVERRIDES),
    # Every schedule of the table at pp=2, with its fewest stages per rank (2 for the multi-stage ones).
    *(Layout(pp=2, schedule=name, virtual_stages=spec.virtual_stages[0]) for name, spec in SPECS.items()),
    # Tensor parallel, with and without sequence parallel and loss parallel.
    Layout(tp=2),
    Layout(tp=2, loss_parallel=False),
    Layout(tp=2, sequence_parallel=True),
    Layout(family="mlp", tp=2),
    Layout(family="mlp", pp=2, schedule="1f1b"),
    Layout(family="cnn", pp=2, schedule="1f1b"),
    Layout(dp=2, schedule="1f1b"),
    # Hybrids.
    Layout(pp=4, schedule="1f1b"),
    Layout(pp=2, tp=2, schedule="1f1b", sequence_parallel=True),
    Layout(pp=2, tp=2, schedule="interleaved-1f1b", virtual_stages=2),
    Layout(pp=2, tp=2, schedule="1f1b"),
    Layout(pp=2, tp=2, schedule="1f1b", sequence_parallel=True, loss_parallel=False),
    Layout(dp=2, tp=2, schedule="1f1b", sequence_parallel=True),
    Layout(pp=2, dp=2, schedule="1f1b"),
    Layout(family="mlp", pp=2, tp=2, schedule="zbv", virtual_stages=2),
    Layout(pp=2, dp=2, tp=2, schedule="1f1b", sequence_parallel=True),
    # Llama: a single- and a V-shaped schedule, tensor parallel with sequence parallel, FSDP2, 3-D.
    Layout(family="llama", pp=2, schedule="1f1b"),
    Layout(family="llama", pp=2, schedule="zbv", virtual_stages=2),
    Layout(family="llama", tp=2, sequence_parallel=True),
    Layout(family="llama", dp=2, schedule="1f1b"),
    Layout(family="llama", pp=2, dp=2, tp=2, schedule="1f1b", sequence_parallel=True),
    # Activation checkpointing recomputes; results must not change.
    Layout(pp=2, schedule="1f1b", activation_checkpointing="full"),
    Layout(tp=2, sequence_parallel=True, activation_checkpointing="selective"),
]


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu().clone()


def case_run(run: RunConfig, layout: Layout) -> RunConfig:
    """`run` (a family-neutral base) with this layout; dp layouts keep the global batch."""
    from mpcli.config.compose import from_yaml, to_yaml

    base = from_yaml(to_yaml(run))
    for override in FAMILY_OVERRIDES[layout.family]:
        key, value = override.split("=")
        section, field = key.split(".")
        node = getattr(base, section)
        setattr(node, field, yaml.safe_load(value))  # as Hydra reads it: 8 -> int, false -> bool
    return replace(
        base,
        parallel=replace(
            base.parallel, pp=layout.pp, dp=layout.dp, tp=layout.tp, schedule=layout.schedule,
            virtual_stages=layout.virtual_stages, sequence_parallel=layout.sequence_parallel,
            loss_parallel=layout.loss_parallel,
        ),
        train=replace(
            base.train,
            microbatch_size=base.train.microbatch_size // layout.dp,
            activation_checkpointing=layout.activation_checkpointing,
        ),
    )  # fmt: skip


def parity_task(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> None:
    """Train every layout of this world size for STEPS steps; save losses and final parameters."""
    for layout in [layout for layout in LAYOUTS if layout.world == dist.get_world_size()]:
        case = case_run(run, layout)
        case_dims = ParallelDims(pp=layout.pp, dp=layout.dp, tp=layout.tp, device_type=device.type)
        trainer = Trainer(case, dims=case_dims, device=device)
        train_data, eval_data = _samplers(case, case_dims)
        losses = [trainer.train_step(*train_data.batch(step))[0] for step in range(STEPS)]
        evaluation = trainer.evaluate(eval_data, 1)
        params = {plain_name(name): _full(p) for part in trainer.parts for name, p in part.named_parameters()}
        out = run_dir / f"{layout.name}.rank{dist.get_rank()}.pt"
        result = {"losses": losses, "eval_loss": evaluation.loss, "accuracy": evaluation.accuracy}
        torch.save({**result, "params": params}, out)


def fail_on_rank_1(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> None:
    """Rank 1 raises while rank 0 waits in a collective that will never complete."""
    if dist.get_rank() == 1:
        raise RuntimeError("injected failure on purpose")
    dist.barrier()


def write_pid(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> None:
    """Every rank records its pid, then rank 1 kills itself with SIGKILL while rank 0 waits."""
    (run_dir / f"pid.{dist.get_rank()}").write_text(str(os.getpid()))
    if dist.get_rank() == 1:
        os.kill(os.getpid(), 9)
    dist.barrier()


def sp_grads_task(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> None:
    """One tp2 sequence-parallel step: the dtype column-wise layers receive, and the Partial gradients
    before and after `reduce_partial_grads`, against DTensor's own per-tensor redistribution."""
    trainer = Trainer(run, dims=dims, device=device)
    seen: list[str] = []
    fc = trainer.parts[0].get_submodule("blocks.0.mlp.fc")
    fc.register_forward_pre_hook(lambda module, args: seen.append(str(args[0].dtype)))
    inputs, targets = _samplers(run, dims)[0].batch(0)
    with trainer._context():
        trainer.pipeline.step(inputs, targets)
    named = {plain_name(n): p for part in trainer.parts for n, p in part.named_parameters()}
    partial = [
        n for n, p in named.items() if isinstance(p.grad, DTensor) and p.grad.placements[0].is_partial()
    ]
    expected = {n: named[n].grad.redistribute(placements=[Replicate()]).to_local().clone() for n in partial}
    reduce_partial_grads(trainer.params)
    result = {
        "input_dtypes": seen,
        "partial": partial,
        "placements": [str(named[n].grad.placements) for n in partial],
        "max_error": max((named[n].grad.to_local() - expected[n]).abs().max().item() for n in partial),
    }
    torch.save(result, run_dir / f"sp_grads.rank{dist.get_rank()}.pt")
