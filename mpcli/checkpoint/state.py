"""Save and restore a training run with torch.distributed.checkpoint: every rank writes its own shards.

The checkpointer saves a mapping of named Stateful parts (objects with `state_dict()` and
`load_state_dict()`; parts.py has them for the model stages, the optimizer, the LR schedule, the RNG
and the data position), built and handed over by the training loop: it knows nothing of the trainer.

Tensor parts go into DCP under `<part>.<key>`. Their keys do not depend on the layout, so any layout
loads any checkpoint (DCP reshards): `model.<name>` and `optim.<name>.<state>` use the full model's
parameter names (every pipeline stage keeps them), and a tied copy is stored once, under its
original's name (`init_key`): a pipeline's last stage loads its `head.weight` from
`model.wte.weight`, and one stage with a tied head holds both names for one tensor. Only tensors go
into DCP (nothing pickled); the step, the data position as a global sample index and the LR
schedule's state go to meta.json. RNG states are per rank (`rng.<rank>.*`) and are restored only
into the same layout; another layout reseeds from train.seed + the step. A checkpoint whose meta.json
has no LR schedule state gets the schedule derived from its step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.stateful import Stateful

from mpcli.checkpoint import store
from mpcli.checkpoint.safe_metadata import SafeReader
from mpcli.checkpoint.store import CheckpointMeta, Layout
from mpcli.checkpoint.weights import check_shapes
from mpcli.config.schema import RunConfig
from mpcli.errors import ConfigError

StateDict = dict[str, Any]

# Tensor parts (into DCP, their part name the key prefix) and the small parts that meta.json holds.
MODEL, OPTIM, RNG = (prefix.removesuffix(".") for prefix in (store.MODEL, store.OPTIM, store.RNG))
LR_SCHEDULE, DATA = "lr_schedule", "data"
META_PARTS = (LR_SCHEDULE, DATA)
# Parts whose state belongs to one rank of one layout: loaded only into the layout that saved them.
PER_RANK = (RNG,)


@runtime_checkable
class LoadsCopies(Protocol):
    """A part that loads more tensors than it saves (tied copies saved under their original)."""

    def load_targets(self) -> StateDict: ...


@runtime_checkable
class DerivedFromStep(Protocol):
    """A part that can be put where it is after `step` steps without its saved state."""

    def restore_step(self, step: int) -> None: ...


def _targets(part: Stateful) -> StateDict:
    """The tensors a part fills when it loads."""
    return part.load_targets() if isinstance(part, LoadsCopies) else part.state_dict()


class Checkpointer:
    """Periodic saves, atomic commits and resume for one run; every rank calls every method."""

    def __init__(
        self, run: RunConfig, state: Mapping[str, Stateful], *, layout: Layout, run_dir: Path
    ) -> None:
        missing = [name for name in META_PARTS if name not in state]
        if missing:
            raise ValueError(f"the state to checkpoint has no {', '.join(missing)} part")
        self.cfg, self.run, self.state, self.layout = run.checkpoint, run, dict(state), layout
        self.root = store.checkpoint_root(self.cfg, run_dir)
        self.rank = dist.get_rank()
        self.pending: tuple[Any, Path, CheckpointMeta] | None = None
        # Async saves run DCP's collectives in a background thread: give them their own group.
        self.async_group = dist.new_group(backend="gloo") if self.cfg.async_save else None
        if self.rank == 0:
            store.clean_partials(self.root)
        dist.barrier()

    def _tensor_parts(self) -> dict[str, Stateful]:
        return {name: part for name, part in self.state.items() if name not in META_PARTS}

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
        tensors = {
            f"{name}.{key}": value
            for name, part in self._tensor_parts().items()
            for key, value in part.state_dict().items()
        }
        partial = self.root / (store.step_name(done) + store.PARTIAL)
        partial.mkdir(parents=True, exist_ok=True)
        meta = self._meta(done)
        if self.async_group is not None:
            # Staging copies the tensors first, so training may change them while this writes.
            future = dcp.async_save(tensors, checkpoint_id=str(partial), process_group=self.async_group)
            self.pending = (future, partial, meta)
        else:
            dcp.save(tensors, checkpoint_id=str(partial))
            self._commit(partial, meta)

    def _meta(self, done: int) -> CheckpointMeta:
        data = self.state[DATA].state_dict()
        if data["step"] != done:
            raise RuntimeError(f"checkpoint of step {done}, but the data position is at step {data['step']}")
        return CheckpointMeta(
            step=done, samples=data["samples"], tokens=data["tokens"], layout=self.layout,
            model=asdict(self.run.model), lr_schedule=self.state[LR_SCHEDULE].state_dict(),
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

    def restore(self) -> int | None:
        """Load the checkpoint to continue from; returns its step, or None when there is none."""
        path = self.resume_path()
        if path is None:
            return None
        meta = store.read_meta(path)
        self._load(path, meta)
        print(f"resumed from {path} at step {meta.step} (saved under {meta.layout})", flush=True)
        return meta.step

    def _derived(self, targets: dict[str, StateDict], meta: CheckpointMeta, saved: set[str]) -> list[str]:
        """Per-rank parts whose saved state does not apply here (another layout, or not saved)."""
        return [
            name
            for name, sd in targets.items()
            if name in PER_RANK
            and (meta.layout != self.layout or any(f"{name}.{key}" not in saved for key in sd))
        ]

    def _load(self, path: Path, meta: CheckpointMeta) -> None:
        saved = store.tensors(path)
        targets = {name: _targets(part) for name, part in self._tensor_parts().items()}
        derived = self._derived(targets, meta, set(saved))
        request = {
            f"{name}.{key}": value
            for name, sd in targets.items()
            if name not in derived
            for key, value in sd.items()
        }
        check_shapes(saved, request, source=f"checkpoint {path}")
        dcp.load(request, storage_reader=SafeReader(path))  # fills the targets' tensors in place
        for name, sd in targets.items():
            if name not in derived:
                self.state[name].load_state_dict(sd)
        self.state[DATA].load_state_dict({"step": meta.step, "samples": meta.samples, "tokens": meta.tokens})
        # After the optimizer: the schedule sets the optimizer's learning rates.
        if meta.lr_schedule:
            self.state[LR_SCHEDULE].load_state_dict(meta.lr_schedule)
        else:  # saved without the schedule's state
            derived.append(LR_SCHEDULE)
        for name in derived:
            part = self.state[name]
            if isinstance(part, DerivedFromStep):
                part.restore_step(meta.step)
