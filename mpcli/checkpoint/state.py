"""Save and restore a training run with torch.distributed.checkpoint: every rank writes its own shards.

Checkpoint keys do not depend on the layout, so any layout loads any checkpoint (DCP reshards):
`model.<name>` and `optim.<name>.<state>` use the full model's parameter names (every pipeline stage
keeps them), and a tied copy is stored once, under its original's name (`init_key`): a pipeline's last
stage loads its `head.weight` from `model.wte.weight`, and one stage with a tied head holds both
names for one tensor. Only tensors go into DCP (nothing pickled); the step, the data position as a
global sample index and the LR schedule go to meta.json. RNG states are per rank (`rng.<rank>.*`)
and are restored only into the same layout; another layout reseeds from train.seed + the step.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
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

from mpcli.checkpoint import store
from mpcli.checkpoint.safe_metadata import SafeReader
from mpcli.checkpoint.store import MODEL, OPTIM, RNG, CheckpointMeta, Layout
from mpcli.checkpoint.weights import check_shapes, load_weights
from mpcli.config.schema import RunConfig
from mpcli.data.sampler import GlobalSampler
from mpcli.errors import ConfigError
from mpcli.train.step import Trainer

# One key per parameter and hyperparameter, so pipeline stages never collide on a param-group index.
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)

StateDict = dict[str, Any]
# (checkpoint key, the state dict holding the tensor, its key there, whether it is the original)
Entry = tuple[str, StateDict, str, bool]


def restore_schedule(schedule: LambdaLR, step: int) -> None:
    """Put a LambdaLR (and its optimizer's learning rates) where it is after `step` steps."""
    lrs = [base * fn(step) for base, fn in zip(schedule.base_lrs, schedule.lr_lambdas, strict=True)]
    state = schedule.state_dict()
    state.update(last_epoch=step, _step_count=step + 1, _last_lr=lrs)
    schedule.load_state_dict(state)
    for group, lr in zip(schedule.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy a loaded tensor into a tied copy, which may be sharded differently."""
    if isinstance(dst, DTensor) and isinstance(src, DTensor) and dst.placements != src.placements:
        src = src.redistribute(dst.device_mesh, dst.placements)
    with torch.no_grad():
        dst.copy_(src)


class Checkpointer:
    """Periodic saves, atomic commits and resume for one run; every rank calls every method."""

    def __init__(self, run: RunConfig, trainer: Trainer, sampler: GlobalSampler, *, run_dir: Path) -> None:
        self.cfg, self.run, self.trainer, self.sampler = run.checkpoint, run, trainer, sampler
        self.root = store.checkpoint_root(self.cfg, run_dir)
        self.rank = dist.get_rank()
        # The state dict helpers take one module: hold this rank's stages under their index.
        self.stages = nn.ModuleDict({str(i): part for i, part in enumerate(trainer.parts)})
        p = run.parallel
        self.layout = Layout(p.pp, p.dp, trainer.dims.tp, p.schedule, p.virtual_stages, dist.get_world_size())
        self.pending: tuple[Any, Path, CheckpointMeta] | None = None
        # Async saves run DCP's collectives in a background thread: give them their own group.
        self.async_group = dist.new_group(backend="gloo") if self.cfg.async_save else None
        if self.rank == 0:
            store.clean_partials(self.root)
        dist.barrier()

    # ---- keys -------------------------------------------------------------------------------------

    def _canonical(self, fqn: str) -> tuple[str, bool]:
        """'<stage>.<name>' -> (the layout-free name, whether this is the original of a tied pair)."""
        index, _, name = fqn.partition(".")
        key = self.trainer.parts[int(index)].init_key(name)
        return key, key == name

    def _entries(self, model_sd: StateDict, optim_sd: StateDict) -> list[Entry]:
        entries: list[Entry] = []
        for fqn in model_sd:
            key, original = self._canonical(fqn)
            entries.append((MODEL + key, model_sd, fqn, original))
        for flat in optim_sd:
            if not flat.startswith("state."):
                continue  # hyperparameters come from the config; the LR schedule from the step
            fqn, _, state = flat.removeprefix("state.").rpartition(".")
            key, original = self._canonical(fqn)
            entries.append((f"{OPTIM}{key}.{state}", optim_sd, flat, original))
        return entries

    def _rng_state(self) -> StateDict:
        state = {f"{RNG}{self.rank}.cpu": torch.get_rng_state()}
        if self.trainer.device.type == "cuda":
            state[f"{RNG}{self.rank}.cuda"] = torch.cuda.get_rng_state(self.trainer.device)
        return state

    # ---- save -------------------------------------------------------------------------------------

    def due(self, done: int) -> bool:
        """Whether a checkpoint is saved after `done` steps."""
        every = self.cfg.every
        return every > 0 and (done % every == 0 or done == self.run.train.steps)

    def maybe_save(self, done: int) -> None:
        """Save after `done` steps when due (every `checkpoint.every` steps and at the last)."""
        if not self.due(done):
            return
        self.wait()
        model_sd = get_model_state_dict(self.stages)
        optim_sd = get_optimizer_state_dict(self.stages, self.trainer.optimizer, options=FLAT)
        state = {key: sd[k] for key, sd, k, original in self._entries(model_sd, optim_sd) if original}
        state.update(self._rng_state())
        partial = self.root / (store.step_name(done) + store.PARTIAL)
        partial.mkdir(parents=True, exist_ok=True)
        meta = self._meta(done)
        if self.async_group is not None:
            # Staging copies the tensors first, so training may change them while this writes.
            future = dcp.async_save(state, checkpoint_id=str(partial), process_group=self.async_group)
            self.pending = (future, partial, meta)
        else:
            dcp.save(state, checkpoint_id=str(partial))
            self._commit(partial, meta)

    def _meta(self, done: int) -> CheckpointMeta:
        samples = self.sampler.offset + done * self.sampler.global_batch
        schedule = {k: v for k, v in self.trainer.lr_schedule.state_dict().items() if k != "lr_lambdas"}
        return CheckpointMeta(
            step=done, samples=samples, tokens=samples * self.trainer.task.tokens_per_sample,
            layout=self.layout, model=asdict(self.run.model), lr_schedule=schedule,
            saved_at=datetime.now().isoformat(timespec="seconds"),
        )  # fmt: skip

    def _commit(self, partial: Path, meta: CheckpointMeta) -> None:
        # DCP's save ends with rank 0 gathering every rank's write results and writing .metadata, so
        # once it returns on rank 0 every rank has finished writing: no extra barrier is needed.
        if self.rank == 0:
            store.commit(partial, meta)
            store.prune(self.root, self.cfg.keep)

    def wait(self) -> None:
        """Finish and commit an async save still in flight."""
        if self.pending is not None:
            future, partial, meta = self.pending
            self.pending = None
            future.result()
            self._commit(partial, meta)

    def close(self) -> None:
        self.wait()
        if self.async_group is not None:
            dist.destroy_process_group(self.async_group)
            self.async_group = None

    # ---- restore ----------------------------------------------------------------------------------

    def resume_path(self) -> Path | None:
        """What to load: a restarted group always continues this run's latest checkpoint."""
        own = store.latest(self.root)
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        if (restarted and own is not None) or self.cfg.resume == "auto":
            return own
        if self.cfg.resume == "never":
            return None
        found = store.resolve(Path(self.cfg.resume).expanduser())
        if found is None:
            raise ConfigError(f"checkpoint.resume={self.cfg.resume}: no complete checkpoint there")
        return found

    def restore(self) -> int:
        """Load the checkpoint to continue from, else `model.init_from`; returns the next step to run."""
        path = self.resume_path()
        if path is None:
            if self.run.model.init_from:
                load_weights(self.trainer.parts, self.run.model.init_from, self.run.model)
            return 0
        meta = store.read_meta(path)
        self._load(path, meta)
        print(f"resumed from {path} at step {meta.step} (saved under {meta.layout})", flush=True)
        return meta.step

    def _load(self, path: Path, meta: CheckpointMeta) -> None:
        model_sd = get_model_state_dict(self.stages)
        optim_sd = get_optimizer_state_dict(self.stages, self.trainer.optimizer, options=FLAT)
        request: StateDict = {}
        copies: list[tuple[StateDict, str, str]] = []
        for key, sd, k, _ in self._entries(model_sd, optim_sd):
            if key in request:
                copies.append((sd, k, key))  # the other side of a tied pair on this rank
            else:
                request[key] = sd[k]
        check_shapes(store.tensors(path), request, source=f"checkpoint {path}")
        rng = {k: v.clone() for k, v in self._rng_state().items()} if meta.layout == self.layout else {}
        dcp.load({**request, **rng}, storage_reader=SafeReader(path))
        for sd, k, key in copies:
            _copy(sd[k], request[key])
        set_model_state_dict(self.stages, model_sd)
        set_optimizer_state_dict(self.stages, self.trainer.optimizer, optim_sd, options=FLAT)
        restore_schedule(self.trainer.lr_schedule, meta.step)
        self.sampler.offset = meta.samples - meta.step * self.sampler.global_batch
        if not rng:
            # Per-rank RNG states do not map onto another layout. Seeding from the resumed step (every
            # rank alike, as a fresh run does) keeps dropout from replaying the first steps' masks.
            torch.manual_seed(self.run.train.seed + meta.step)
        for key, value in rng.items():
            if key.endswith(".cpu"):
                torch.set_rng_state(value)
            else:
                torch.cuda.set_rng_state(value, self.trainer.device)
