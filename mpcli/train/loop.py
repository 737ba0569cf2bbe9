"""The loop that runs, evaluates and reports training steps (the step itself is in step.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from mpcli.checkpoint.state import Checkpointer
from mpcli.config.schema import RunConfig
from mpcli.data.datasets import load_datasets
from mpcli.data.sampler import GlobalSampler
from mpcli.models import build_model
from mpcli.topology import Axis, ParallelDims
from mpcli.train.metrics import MetricsWriter, mfu, peak_tflops
from mpcli.train.step import EvalResult, Trainer
from mpcli.train.timeline import StepTimeline


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
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


class Reporter:
    """Turns step results into metrics.jsonl records (written by global rank 0 only)."""

    def __init__(self, run: RunConfig, trainer: Trainer, *, samples_per_step: int, run_dir: Path) -> None:
        self.trainer, self.world = trainer, trainer.dims.world_size
        self.samples_per_step = samples_per_step
        self.tokens_per_step = samples_per_step * trainer.task.tokens_per_sample
        self.cuda = trainer.device.type == "cuda"
        self.peak = peak_tflops(trainer.device.type, run.train.peak_tflops)
        # The whole model's FLOPs (a stage's parts hold only its own parameters): a meta build is free.
        self.flops_per_sample = build_model(run.model).flops_per_sample()
        self.writer = MetricsWriter(run_dir / "metrics.jsonl") if dist.get_rank() == 0 else None

    def step(self, done: int, *, loss: float, lr: float, grad_norm: float, step_time: float) -> None:
        max_mem_gb = self.trainer.max_memory_gb() if self.cuda else None  # collective: every rank
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


def train(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> TrainResult:
    """Run `train.steps` steps; global rank 0 writes metrics.jsonl."""
    torch.manual_seed(run.train.seed)
    trainer = Trainer(run, dims=dims, device=device)
    train_data, eval_data = _samplers(run, dims)
    reporter = Reporter(run, trainer, samples_per_step=train_data.global_batch, run_dir=run_dir)
    result, steps = TrainResult(), run.train.steps
    stages = dict(zip(trainer.pipeline.stage_indices, trainer.parts, strict=True))
    timeline = StepTimeline(stages, run.train.timeline_steps, device=device, run_dir=run_dir)
    checkpointer = Checkpointer(run, trainer, train_data, run_dir=run_dir)
    for step in range(checkpointer.restore(), steps):
        timeline.begin(step)
        start = time.perf_counter()
        lr = trainer.lr_schedule.get_last_lr()[0]
        loss, grad_norm = trainer.train_step(*train_data.batch(step))
        step_time = time.perf_counter() - start
        timeline.end(step)
        idle = timeline.idle_fraction(step)  # recorded steps are the same on every rank
        if idle is not None:
            reporter.bubble(step + 1, trainer.per_rank(idle))
        result.losses.append(loss)
        done = step + 1
        if _due(done, run.train.log_every, steps):
            reporter.step(done, loss=loss, lr=lr, grad_norm=grad_norm, step_time=step_time)
        if _due(done, run.train.eval_every, steps):
            result.evals[done] = trainer.evaluate(eval_data, run.train.eval_batches)
            reporter.eval(done, result.evals[done])
        checkpointer.maybe_save(done)
    checkpointer.close()
    reporter.close()
    return result
