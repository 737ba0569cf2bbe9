"""`mpcli plan conf=NAME [overrides]`: mesh, stages, memory, bubble and communication, before launching.

Runs no worker processes and needs no GPU: the model is profiled on the meta device (mpcli/estimate/).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mpcli.cli.common import Overrides, RecipeDirs, TrustTargets, cuda_device_count, load_run, user_errors
from mpcli.config.schema import RunConfig
from mpcli.config.target import trusting
from mpcli.config.validate import bf16_enabled, on_for_cuda, resolve_device, validate
from mpcli.errors import ConfigError
from mpcli.estimate import tables
from mpcli.estimate.layout import CostModel, estimate
from mpcli.estimate.profile import ModelProfile, profile_model
from mpcli.estimate.suggest import suggest as suggest_layouts

Gpus = Annotated[
    int | None,
    typer.Option(
        "--gpus", help="Plan for N GPUs per node (default: this machine's); implies CUDA.", show_default=False
    ),
]
GpuMem = Annotated[
    float | None,
    typer.Option(
        "--gpu-mem", help="Memory per GPU in GiB: marks ranks that do not fit; needed by --suggest.",
        show_default=False,
    ),
]  # fmt: skip
Suggest = Annotated[
    bool, typer.Option("--suggest", help="Rank layouts (pp, tp, dp, schedule, microbatches) that fit.")
]
Top = Annotated[int, typer.Option("--top", help="How many layouts --suggest shows.")]


def _check_options(gpus: int | None, gpu_mem: float | None, suggest: bool, top: int) -> None:
    if gpus is not None and gpus < 1:
        raise ConfigError(f"--gpus={gpus}: must be >= 1")
    if gpu_mem is not None and gpu_mem <= 0:
        raise ConfigError(f"--gpu-mem={gpu_mem:g}: must be > 0 (GiB per GPU)")
    if top < 1:
        raise ConfigError(f"--top={top}: must be >= 1")
    if suggest and gpus is None:
        raise ConfigError("--gpus: --suggest needs the number of GPUs per node, e.g. --gpus 8")
    if suggest and gpu_mem is None:
        raise ConfigError("--gpu-mem: --suggest needs the memory per GPU in GiB, e.g. --gpu-mem 80")


def _device(run: RunConfig, gpus: int | None) -> tuple[str, int]:
    """(device the run would use, CUDA devices per node to check against)."""
    if gpus is not None:
        return ("cpu" if run.topology.device == "cpu" else "cuda"), gpus
    cuda = cuda_device_count()
    return resolve_device(run.topology.device, cuda), cuda


def plan(
    args: Overrides = None,
    recipe_dir: RecipeDirs = None,
    gpus: Gpus = None,
    gpu_mem: GpuMem = None,
    suggest: Suggest = False,
    top: Top = 10,
    trust_target: TrustTargets = None,
) -> None:
    """Estimate a run before launching it: `mpcli plan conf=gpt2-pipeline model=gpt2-xl --gpus 8`."""
    with user_errors():
        _check_options(gpus, gpu_mem, suggest, top)
    with trusting(trust_target):
        _plan(args, recipe_dir, gpus, gpu_mem, suggest=suggest, top=top)


def _plan(
    args: list[str] | None, recipe_dir: list[Path] | None, gpus: int | None, gpu_mem: float | None,
    *, suggest: bool, top: int,
) -> None:  # fmt: skip
    run = load_run(args, recipe_dir, check=False)
    device, cuda_devices = _device(run, gpus)
    with user_errors():
        validate(run, cuda_devices=cuda_devices)
    if run.parallel.split is None and run.parallel.balance == "time":
        from mpcli.plan import with_split  # times every block on this machine, as `mpcli train` does

        run = with_split(run, cuda_devices)
    cost = CostModel()
    profile = profile_model(run)
    bf16, compiled = bf16_enabled(run.train.precision, device), on_for_cuda(run.train.compile, device)
    layout = estimate(run, profile, bf16=bf16, compiled=compiled)
    console = Console()
    m = run.model
    where = f"device {device}"
    if device == "cpu" and run.topology.device == "auto":  # a laptop planning for a cluster: say so
        where += " (no GPU here, so float32 under train.precision=auto; --gpus N plans for N GPUs a node)"
    console.print(
        f"{m.family}-{m.size}: {profile.n_params / 1e6:,.1f} M parameters, {where}", highlight=False
    )
    console.print(tables.mesh_table(layout))
    console.print(tables.stage_table(layout, profile.model))
    console.print(tables.memory_table(layout, gpu_mem))
    console.print(tables.schedule_table(layout, cost, gpu=device == "cuda"))
    from mpcli.plan import speed_tip  # as with_split above: loads the pipeline machinery

    tip = speed_tip(run, cuda_devices, profile=profile, gpu_mem_gib=gpu_mem)  # GPU runs only
    if tip is not None:
        console.print(tip, highlight=False)
    if suggest and gpus is not None and gpu_mem is not None:
        _suggest(run, profile, console, gpus=gpus, gpu_mem=gpu_mem, top=top, cost=cost)


def _suggest(
    run: RunConfig, profile: ModelProfile, console: Console, *, gpus: int, gpu_mem: float, top: int,
    cost: CostModel,
) -> None:  # fmt: skip
    topology = replace(run.topology, device="cpu" if run.topology.device == "cpu" else "auto")
    found, invalid, too_big = suggest_layouts(
        replace(run, topology=topology), profile, gpus=gpus, gpu_mem_gib=gpu_mem, cost=cost,
        bf16=bf16_enabled(run.train.precision, "cuda"), compiled=on_for_cuda(run.train.compile, "cuda"),
    )  # fmt: skip
    console.print(tables.suggest_table(found[:top], gpus=gpus * run.topology.nnodes, gpu_mem_gib=gpu_mem))
    console.print(
        f"{len(found)} layouts fit ({invalid} rejected by the config checks, {too_big} over "
        f"{cost.headroom:.0%} of {gpu_mem:g} GiB); estimates assume {cost.peak_tflops:g} TFLOP/s per GPU "
        f"at {cost.efficiency:.0%} and {cost.intra_node_gb_s:g} GB/s inside a node, "
        f"{cost.inter_node_gb_s:g} GB/s between nodes, {cost.pass_overhead_s * 1e3:g} ms per stage pass; "
        f"host time {cost.step_host_s * 1e3:g} ms per step, {cost.block_pass_s * 1e3:g} ms per block pass "
        f"and {cost.tp_collective_s * 1e3:g} ms per tensor-parallel collective",
        highlight=False,
    )
    if not found:
        raise typer.Exit(1)
