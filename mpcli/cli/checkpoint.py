"""`mpcli checkpoint list|inspect|export`: read checkpoints in this process (no process group)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mpcli.cli.common import user_errors
from mpcli.errors import ConfigError

app = typer.Typer(help="List, inspect and export sharded checkpoints.", no_args_is_help=True)

CheckpointPath = Annotated[
    Path, typer.Argument(help="A checkpoint directory, or a run (or checkpoints) directory: its latest.")
]


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


def _resolve(path: Path) -> Path:
    from mpcli.checkpoint import store

    found = store.resolve(path)
    if found is None:
        raise ConfigError(f"{path}: no complete checkpoint there")
    return found


@app.command("list")
def list_checkpoints(
    run_dir: Annotated[Path, typer.Argument(help="A run directory or a checkpoints directory.")],
) -> None:
    """Complete checkpoints of a run: step, tokens, size on disk and the layout it was saved with."""
    from mpcli.checkpoint import store

    root = run_dir / store.CHECKPOINTS if (run_dir / store.CHECKPOINTS).is_dir() else run_dir
    with user_errors():
        paths = store.list_checkpoints(root)
        if not paths:
            raise ConfigError(f"{run_dir}: no complete checkpoints there")
    current = store.latest(root)
    table = Table(title=f"checkpoints in {root}")
    for column in ("step", "tokens", "size", "layout", "saved", "path"):
        table.add_column(column, justify="right" if column in ("step", "tokens", "size") else "left")
    for path in paths:
        meta = store.read_meta(path)
        mark = " (latest)" if path == current else ""
        table.add_row(
            str(meta.step), f"{meta.tokens:,}", _mib(store.size_bytes(path)), str(meta.layout),
            meta.saved_at, f"{path.name}{mark}",
        )  # fmt: skip
    Console(width=200).print(table)


@app.command()
def inspect(
    path: CheckpointPath,
    all_tensors: Annotated[bool, typer.Option("--all", help="Also list optimizer and RNG tensors.")] = False,
) -> None:
    """Step, data position, layout, model and the tensors (global shapes, dtypes) of a checkpoint."""
    from mpcli.checkpoint import store

    with user_errors():  # a refused or unreadable checkpoint is one line, exit code 2
        checkpoint = _resolve(path)
        meta = store.read_meta(checkpoint)
        tensors = store.tensors(checkpoint)
    console = Console(width=200)
    model = meta.model
    console.print(f"checkpoint: {checkpoint}", highlight=False)
    console.print(f"step {meta.step}, next sample {meta.samples:,}, tokens {meta.tokens:,}", highlight=False)
    console.print(f"layout: {meta.layout}; saved {meta.saved_at}", highlight=False)
    console.print(f"model: {model['family']} {model['size']}", highlight=False)
    table = Table()
    for column in ("tensor", "shape", "dtype"):
        table.add_column(column)
    shown = {k: v for k, v in tensors.items() if all_tensors or k.startswith(store.MODEL)}
    for name, info in shown.items():
        table.add_row(name, str(list(info.shape)), str(info.dtype).removeprefix("torch."))
    console.print(table)
    params = sum(math.prod(v.shape) for k, v in tensors.items() if k.startswith(store.MODEL))
    others = len(tensors) - len(shown)
    tail = f"; {others} optimizer/RNG tensors not shown (--all)" if others else ""
    console.print(f"{params / 1e6:.2f} M model parameters{tail}", highlight=False)


@app.command()
def export(
    path: CheckpointPath,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The .safetensors file (or, with --format hf, directory).")
    ],
    bf16: Annotated[bool, typer.Option("--bf16", help="Store floating-point weights as bfloat16.")] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="safetensors: one file in mpcli's names (for model.init_from); hf: a Hugging Face model "
            "directory (config.json + model.safetensors) for transformers.",
        ),
    ] = "safetensors",
) -> None:
    """Write a checkpoint's model as one consolidated safetensors file or a Hugging Face directory."""
    from mpcli.checkpoint import weights

    with user_errors():
        if fmt not in ("safetensors", "hf"):
            raise ConfigError(f"--format {fmt}: must be safetensors or hf")
        tensors = weights.export(path, out, bf16=bf16, hf=fmt == "hf")
    n_params = sum(t.numel() for t in tensors.values())
    typer.echo(f"wrote {out}: {len(tensors)} tensors, {n_params / 1e6:.2f} M parameters")
