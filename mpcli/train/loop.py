"""The loop that runs, evaluates and reports training steps (the step itself is in step.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.stateful import Stateful

from mpcli.checkpoint.parts import DataPosition, LRScheduleState, ModelState, OptimizerState, RngState
from mpcli.checkpoint.state import DATA, LR_SCHEDULE, MODEL, OPTIM, RNG, Checkpointer
from mpcli.checkpoint.store import Layout
from mpcli.checkpoint.weights import load_weights
from mpcli.config.schema import RunConfig, TrainConfig
from mpcli.data.datasets import load_datasets
from mpcli.data.sampler import GlobalSampler
from mpcli.models import build_model
from mpcli.topology import Axis, ParallelDims
from mpcli.train.metrics import MetricsWriter, mfu, peak_tflops
from mpcli.train.step import EvalResult, StepStats, Trainer
from mpcli.train.timeline import StepTimeline


@dataclass
class TrainResult:
    # The mean loss of every step read on the host (see `reads_step`: with train.log_every=1, every
    # step), in step order; `loss_steps` names their steps.
    losses: list[float] = field(default_factory=list)
    loss_steps: list[int] = field(default_factory=list)
    evals: dict[int, EvalResult] = field(default_factory=dict)


def _samplers(run: RunConfig, dims: ParallelDims) -> tuple[GlobalSampler, GlobalSampler]:
    train_set, eval_set = load_datasets(run.data, run.model, seed=run.train.seed)
    local_batch = run.train.microbatch_size * run.parallel.microbatches
    common = dict(local_batch=local_batch, dp=dims.dp, dp_rank=dims.coordinate(Axis.DP))
    return (
        GlobalSampler(train_set, seed=run.train.seed, **common),
        GlobalSampler(eval_set, seed=run.train.seed + 1, **common),
    )


def _due(done: int, every: int, steps: int) -> bool:
    """Every `every` steps and at the last step; `every=0` means never."""
    return every > 0 and (done % every == 0 or done == steps)


def reads_step(done: int, train: TrainConfig) -> bool:
    """Whether the step that makes `done` steps reduces its loss (and peak memory) over the ranks and
    is read on the host: on logged steps, and on the last step (the run's result). Other steps hold
    no collective but their own math and no host read. Evaluation, checkpoints and the timeline do
    not use the training loss."""
    return _due(done, train.log_every, train.steps) or done == train.steps


def _checkpoint_state(run: RunConfig, trainer: Trainer, position: DataPosition) -> dict[str, Stateful]:
    """The parts of this rank's training state that a checkpoint saves, by part name."""
    model = ModelState(trainer.parts)
    return {
        MODEL: model,
        OPTIM: OptimizerState(model, trainer.optimizer),
        LR_SCHEDULE: LRScheduleState(trainer.lr_schedule),
        RNG: RngState(dist.get_rank(), trainer.device, run.train.seed),
        DATA: position,
    }


def checkpointing(
    run: RunConfig, trainer: Trainer, sampler: GlobalSampler, *, run_dir: Path
) -> tuple[Checkpointer, DataPosition]:
    """The run's checkpointer and the data position that the loop advances."""
    position = DataPosition(sampler, trainer.task.tokens_per_sample)
    p = run.parallel
    layout = Layout(p.pp, p.dp, trainer.dims.tp, p.schedule, p.virtual_stages, dist.get_world_size())
    state = _checkpoint_state(run, trainer, position)
    return Checkpointer(run, state, layout=layout, run_dir=run_dir), position


def restore(run: RunConfig, trainer: Trainer, checkpointer: Checkpointer) -> int:
    """Continue from a checkpoint, else start from `model.init_from`'s weights (when set); returns
    the number of steps already done."""
    step = checkpointer.restore()
    if step is not None:
        return step
    if run.model.init_from:
        load_weights(trainer.parts, run.model.init_from, run.model)
    return 0


class Reporter:
    """Turns step results into metrics.jsonl records (written by global rank 0 only)."""

    def __init__(self, run: RunConfig, trainer: Trainer, *, samples_per_step: int, run_dir: Path) -> None:
        self.world = trainer.dims.world_size
        self.samples_per_step = samples_per_step
        self.tokens_per_step = samples_per_step * trainer.task.tokens_per_sample
        self.cuda = trainer.device.type == "cuda"
        self.peak = peak_tflops(trainer.device.type, run.train.peak_tflops)
        # The whole model's FLOPs (a stage's parts hold only its own parameters): a meta build is free.
        self.flops_per_sample = build_model(run.model).flops_per_sample()
        self.writer = MetricsWriter(run_dir / "metrics.jsonl") if dist.get_rank() == 0 else None

    def step(
        self,
        done: int,
        *,
        loss: float,
        lr: float,
        grad_norm: float,
        step_time: float,
        max_mem_gb: float | None,
    ) -> None:
        if self.writer is None:
            return
        tps = self.tokens_per_step / step_time
        record = {
            "step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens": done * self.tokens_per_step, "tokens_per_s": tps,
            "tokens_per_s_per_device": tps / self.world, "samples_per_s": self.samples_per_step / step_time,
            "step_time_s": step_time,
        }  # fmt: skip
        if self.cuda:
            samples_per_s = self.samples_per_step / step_time
            record["mfu"] = mfu(samples_per_s, self.flops_per_sample, devices=self.world, peak=self.peak)
            record["max_mem_gb"] = max_mem_gb
        self.writer.write(record)

    def bubble(self, done: int, idle_per_rank: list[float]) -> None:
        """The measured pipeline bubble: idle share of a recorded step, per rank and averaged."""
        if self.writer is not None:
            record = {
                "step": done,
                "idle_per_rank": idle_per_rank,
                "bubble": sum(idle_per_rank) / len(idle_per_rank),
            }
            self.writer.write(record)

    def eval(self, done: int, result: EvalResult) -> None:
        if self.writer is not None:
            record = {"step": done, "eval_loss": result.loss}
            if result.accuracy is not None:
                record["eval_accuracy"] = result.accuracy
            self.writer.write(record)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


Mark = torch.cuda.Event | float


class _DeviceClock:
    """Time marks on the device's own timeline: CUDA events (the device runs behind the host), or the
    host clock where work is synchronous (CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Mark:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, begin: Mark, end: Mark) -> float:
        if isinstance(begin, torch.cuda.Event) and isinstance(end, torch.cuda.Event):
            end.synchronize()
            return begin.elapsed_time(end) / 1000
        assert isinstance(begin, float) and isinstance(end, float)
        return end - begin


@dataclass
class _Queued:
    done: int  # steps done once this one is
    lr: float
    stats: StepStats | None  # None: a quiet step, nothing to read
    start: Mark  # before the step was queued
    end: Mark  # after it


class _StepReader:
    """Reads each queued step's results once the next step is queued (so the device never waits for
    the host between steps) and records them. A step's time runs from the end of the step before it
    on the device's timeline, or from its own start after other work (evaluation, checkpoints).
    Quiet steps are never read: they only move the mark the next step's time starts from."""

    def __init__(self, run: RunConfig, reporter: Reporter, result: TrainResult, clock: _DeviceClock) -> None:
        self.run, self.reporter, self.result, self.clock = run, reporter, result, clock
        self.queued: _Queued | None = None
        self.last_end: Mark | None = None

    def queue(self, step: _Queued) -> None:
        """Hold `step` (already launched) and read the one before it."""
        previous, self.queued = self.queued, step
        if previous is not None:
            self._read(previous)

    def flush(self) -> None:
        """Read the held step now (waits for it, unless it is quiet); the next step's time starts
        afresh."""
        if self.queued is not None:
            self._read(self.queued)
            self.queued = None
        self.last_end = None

    def _read(self, step: _Queued) -> None:
        begin = self.last_end if self.last_end is not None else step.start
        self.last_end = step.end
        if step.stats is None:
            return
        loss, grad_norm, peak = step.stats.read()
        step_time = self.clock.seconds(begin, step.end)
        self.result.losses.append(loss)
        self.result.loss_steps.append(step.done)
        if _due(step.done, self.run.train.log_every, self.run.train.steps):
            self.reporter.step(
                step.done,
                loss=loss,
                lr=step.lr,
                grad_norm=grad_norm,
                step_time=step_time,
                max_mem_gb=peak,
            )


def _launch(trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor], *, read: bool) -> StepStats | None:
    """Queue a step, with the reductions of its figures only when they will be read."""
    if read:
        return trainer.launch_step(*batch)
    trainer.launch_quiet_step(*batch)
    return None


def train(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> TrainResult:
    """Run `train.steps` steps; global rank 0 writes metrics.jsonl."""
    torch.manual_seed(run.train.seed)
    trainer = Trainer(run, dims=dims, device=device)
    train_data, eval_data = _samplers(run, dims)
    reporter = Reporter(run, trainer, samples_per_step=train_data.global_batch, run_dir=run_dir)
    result, steps = TrainResult(), run.train.steps
    stages = dict(zip(trainer.pipeline.stage_indices, trainer.parts, strict=True))
    timeline = StepTimeline(stages, run.train.timeline_steps, device=device, run_dir=run_dir)
    checkpointer, position = checkpointing(run, trainer, train_data, run_dir=run_dir)
    clock = _DeviceClock(device)
    reader = _StepReader(run, reporter, result, clock)
    for step in range(restore(run, trainer, checkpointer), steps):
        done = step + 1
        timeline.begin(step)
        lr, start = trainer.lr_schedule.get_last_lr()[0], clock.mark()
        stats = _launch(trainer, train_data.batch(step), read=reads_step(done, run.train))
        position.step = done
        reader.queue(_Queued(done, lr, stats, start, clock.mark()))
        timeline.end(step)
        idle = timeline.idle_fraction(step)  # recorded steps are the same on every rank
        if idle is not None:
            reporter.bubble(done, trainer.per_rank(idle))
        evaluate = _due(done, run.train.eval_every, steps)
        if idle is None and not evaluate and not checkpointer.due(done) and done < steps:
            continue
        reader.flush()  # what follows waits for this step anyway
        if evaluate:
            result.evals[done] = trainer.evaluate(eval_data, run.train.eval_batches)
            reporter.eval(done, result.evals[done])
        checkpointer.maybe_save(done)
    checkpointer.close()
    reporter.close()
    return result
