"""One training step for any layout, and the loop that runs, evaluates and reports them."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from mpcli.config.schema import RunConfig
from mpcli.data.datasets import load_tokens
from mpcli.data.sampler import WindowSampler
from mpcli.parallel.pipeline import Pipeline, build_pipeline
from mpcli.topology import Axis, ParallelDims
from mpcli.train.metrics import MetricsWriter, mfu, peak_tflops
from mpcli.train.optim import build_lr_schedule, build_optimizer


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class Trainer:
    """This rank's stage, optimizer and step; every rank calls every method (they hold collectives)."""

    def __init__(self, run: RunConfig, *, dims: ParallelDims, device: torch.device) -> None:
        self.run, self.dims, self.device = run, dims, device
        self.pipeline: Pipeline = build_pipeline(
            run.model, run.parallel, dims=dims, device=device, seed=run.train.seed, loss_fn=lm_loss
        )
        self.model = self.pipeline.model
        self.optimizer = build_optimizer(self.model, run.train, device_type=device.type)
        self.lr_schedule = build_lr_schedule(self.optimizer, run.train)
        self.tied_group = dims.pp_end_groups()
        bf16 = run.train.precision == "bf16" or (run.train.precision == "auto" and device.type == "cuda")
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else (lambda: nullcontext())
        )

    def _tied_params(self) -> list[torch.Tensor]:
        """The embedding (first stage) or its head copy (last stage), when they sit on different ranks."""
        model = self.model
        if self.tied_group is None or not model.cfg.tie_embeddings:
            return []
        if self.pipeline.has_first_stage:
            return [model.wte.weight]
        return [model.head.weight] if self.pipeline.has_last_stage else []

    def _sync_tied_grads(self) -> None:
        # Both copies get the sum of both gradients, so identical updates keep them identical.
        for param in self._tied_params():
            dist.all_reduce(_local(param.grad), group=self.tied_group)

    def _clip_grads(self) -> float:
        """Clip by the global norm over every stage (and shard), counting a tied head copy once."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        copy = self.model.head.weight if self.model.head_is_separate_copy else None
        counted = [p.grad for p in params if p is not copy]
        norm = get_total_norm(counted) if counted else torch.zeros((), device=self.device)
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        squared = norm.float() ** 2
        if self.dims.pp_enabled:
            dist.all_reduce(squared, group=self.dims.mesh[Axis.PP].get_group())
        total = squared.sqrt()
        if self.run.train.grad_clip > 0:
            clip_grads_with_norm_(params, self.run.train.grad_clip, total)
        return float(total)

    def _mean_loss(self, losses: list[torch.Tensor]) -> float:
        """Mean over microbatches and dp replicas of the last stage's losses, known on every rank."""
        local = torch.stack(losses).mean().float() if losses else torch.zeros((), device=self.device)
        packed = torch.stack([local.detach(), torch.tensor(float(bool(losses)), device=self.device)])
        dist.all_reduce(packed)
        return float(packed[0] / packed[1])

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """(loss, grad norm) of one optimizer step on a (local_batch, seq_len) batch."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            losses = self.pipeline.step(inputs.to(self.device), targets.to(self.device))
        self._sync_tied_grads()
        grad_norm = self._clip_grads()
        self.optimizer.step()
        self.lr_schedule.step()
        return self._mean_loss(losses), grad_norm

    def max_memory_gb(self) -> float:
        """Peak CUDA memory allocated by the busiest rank."""
        peak = torch.tensor(torch.cuda.max_memory_allocated(self.device) / 2**30, device=self.device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return float(peak)

    @torch.no_grad()
    def eval_loss(self, sampler: WindowSampler, batches: int) -> float:
        self.model.eval()
        losses: list[torch.Tensor] = []
        for i in range(batches):
            inputs, targets = sampler.batch(i)
            with self.autocast():
                losses += self.pipeline.step(inputs.to(self.device), targets.to(self.device), train=False)
        self.model.train()
        return self._mean_loss(losses)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    eval_losses: dict[int, float] = field(default_factory=dict)


def _samplers(run: RunConfig, dims: ParallelDims) -> tuple[WindowSampler, WindowSampler]:
    splits = load_tokens(run.data)
    local_batch = run.train.microbatch_size * run.parallel.microbatches
    dp_rank = dims.coordinate(Axis.DP)
    common = dict(seq_len=run.model.seq_len, local_batch=local_batch, dp=dims.dp, dp_rank=dp_rank)
    return (
        WindowSampler(splits.train, seed=run.train.seed, **common),
        WindowSampler(splits.eval, seed=run.train.seed + 1, **common),
    )


def _due(done: int, every: int, steps: int) -> bool:
    """Every `every` steps and at the last step; `every=0` means never."""
    return every > 0 and (done % every == 0 or done == steps)


class Reporter:
    """Turns step results into metrics.jsonl records (written by global rank 0 only)."""

    def __init__(self, run: RunConfig, trainer: Trainer, *, tokens_per_step: int, run_dir: Path) -> None:
        self.trainer, self.tokens_per_step, self.world = trainer, tokens_per_step, trainer.dims.world_size
        self.cuda = trainer.device.type == "cuda"
        self.peak = peak_tflops(trainer.device.type, run.train.peak_tflops)
        self.flops_per_token = trainer.model.flops_per_token()
        self.writer = MetricsWriter(run_dir / "metrics.jsonl") if dist.get_rank() == 0 else None

    def step(self, done: int, *, loss: float, lr: float, grad_norm: float, step_time: float) -> None:
        max_mem_gb = self.trainer.max_memory_gb() if self.cuda else None  # collective: every rank
        if self.writer is None:
            return
        tps = self.tokens_per_step / step_time
        record = {
            "step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens": done * self.tokens_per_step, "tokens_per_s": tps,
            "tokens_per_s_per_device": tps / self.world, "step_time_s": step_time,
        }  # fmt: skip
        if self.cuda:
            record["mfu"] = mfu(tps, self.flops_per_token, devices=self.world, peak=self.peak)
            record["max_mem_gb"] = max_mem_gb
        self.writer.write(record)

    def eval(self, done: int, eval_loss: float) -> None:
        if self.writer is not None:
            self.writer.write({"step": done, "eval_loss": eval_loss})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(run: RunConfig, *, dims: ParallelDims, device: torch.device, run_dir: Path) -> TrainResult:
    """Run `train.steps` steps; global rank 0 writes metrics.jsonl."""
    torch.manual_seed(run.train.seed)
    trainer = Trainer(run, dims=dims, device=device)
    train_data, eval_data = _samplers(run, dims)
    reporter = Reporter(
        run, trainer, tokens_per_step=train_data.global_batch * run.model.seq_len, run_dir=run_dir
    )
    result, steps = TrainResult(), run.train.steps
    for step in range(steps):
        start = time.perf_counter()
        lr = trainer.lr_schedule.get_last_lr()[0]
        loss, grad_norm = trainer.train_step(*train_data.batch(step))
        step_time = time.perf_counter() - start
        result.losses.append(loss)
        done = step + 1
        if _due(done, run.train.log_every, steps):
            reporter.step(done, loss=loss, lr=lr, grad_norm=grad_norm, step_time=step_time)
        if _due(done, run.train.eval_every, steps):
            result.eval_losses[done] = trainer.eval_loss(eval_data, run.train.eval_batches)
            reporter.eval(done, result.eval_losses[done])
    reporter.close()
    return result
