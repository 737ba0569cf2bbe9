"""One optimizer step for any layout (pp x dp x tp, any schedule), and evaluation."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import loss_parallel
from torch.nn.utils import get_total_norm

from mpcli.config.schema import RunConfig
from mpcli.config.validate import bf16_enabled
from mpcli.data.sampler import GlobalSampler
from mpcli.models import task_of
from mpcli.parallel.pipeline import Pipeline, build_pipeline, loss_parallel_enabled, stage_ranks
from mpcli.parallel.tensor import reduce_partial_grads
from mpcli.topology import Axis, ParallelDims
from mpcli.train.optim import build_lr_schedule, build_optimizer


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


@dataclass
class StepStats:
    """One step's loss, gradient norm and peak memory, still on the device. Reading them waits for
    that step's work alone, so the loop reads them after queueing the next step: the device never
    idles between steps waiting for the host."""

    summed: torch.Tensor  # (loss sum, loss count) over every rank's microbatches
    grad_norm: torch.Tensor  # global, before clipping
    peak_gb: torch.Tensor | None  # max over ranks of max_memory_allocated (CUDA only)

    def read(self) -> tuple[float, float, float | None]:
        """(mean loss, grad norm, peak GiB or None): one device-to-host copy."""
        parts = [self.summed, self.grad_norm.reshape(1).to(self.summed)]
        parts += [self.peak_gb.to(self.summed)] if self.peak_gb is not None else []
        values = torch.cat(parts).tolist()
        return values[0] / values[1], values[2], values[3] if self.peak_gb is not None else None


@dataclass
class EvalResult:
    loss: float
    accuracy: float | None


class Trainer:
    """This rank's stages, optimizer and step; every rank calls every method (they hold collectives)."""

    def __init__(self, run: RunConfig, *, dims: ParallelDims, device: torch.device) -> None:
        self.run, self.dims, self.device = run, dims, device
        self.task = task_of(run.model)
        self.pipeline: Pipeline = build_pipeline(
            run.model, run.parallel, run.train, dims=dims, device=device, loss_fn=self.task.loss_fn
        )
        self.parts = self.pipeline.parts
        self.params = [p for part in self.parts for p in part.parameters()]
        self.optimizer = build_optimizer(self.params, run.train, device_type=device.type)
        self.lr_schedule = build_lr_schedule(self.optimizer, run.train)
        # A group of the first and last pipeline rank exists only where the tied pair spans two ranks.
        self.tied_group = dims.pp_end_groups(last_stage_rank=stage_ranks(run.parallel)[-1])
        self.bf16 = bf16_enabled(run.train.precision, device.type)
        self.loss_parallel = loss_parallel_enabled(run.parallel, run.model)

    def _context(self) -> ExitStack:
        """bf16 autocast and loss_parallel, around forward *and* backward (the schedule does both)."""
        stack = ExitStack()
        if self.bf16:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        if self.loss_parallel:
            stack.enter_context(loss_parallel())
        return stack

    def _sync_tied_grads(self) -> None:
        """Give both sides of a tied pair the sum of both gradients, so their updates stay identical."""
        tied = [p for part in self.parts for p in part.tied_pair()]
        if len(tied) == 2:  # both on this rank (V-shaped schedules)
            total = tied[0].grad + tied[1].grad
            for param in tied:
                param.grad = total.clone()
        elif tied and self.tied_group is not None:
            param = tied[0]
            if isinstance(param, DTensor) and param.grad.placements != param.placements:
                # The embedding backward may return a replicated gradient for a vocab-sharded table;
                # the head's is sharded: bring both to the parameter's layout so the shards line up.
                param.grad = param.grad.redistribute(param.device_mesh, param.placements)
            dist.all_reduce(_local(param.grad), group=self.tied_group)

    def _clip_grads(self) -> torch.Tensor:
        """Clip by the global norm over every stage and shard, counting a tied head copy once; returns
        the norm before clipping. No host sync: the clip factor stays on the device (min(1, max/norm),
        as torch's clip_grad_norm_), so the optimizer is queued right behind the backward."""
        copies = {id(part.head.weight) for part in self.parts if part.head_is_separate_copy}  # type: ignore[union-attr]
        grads = [p.grad for p in self.params if p.grad is not None]
        groups: dict[object, list[torch.Tensor]] = {}
        for p in self.params:
            if p.grad is not None and id(p) not in copies:
                key = (p.grad.device_mesh, p.grad.placements) if isinstance(p.grad, DTensor) else None
                groups.setdefault(key, []).append(p.grad)
        squared = torch.zeros((), device=self.device)
        for members in groups.values():  # one norm per sharding layout; DTensor norms are global
            norm = get_total_norm(members)
            squared = squared + (norm.full_tensor() if isinstance(norm, DTensor) else norm).float() ** 2
        if self.dims.pp_enabled:
            dist.all_reduce(squared, group=self.dims.mesh[Axis.PP].get_group())
        total = squared.sqrt()
        max_norm = self.run.train.grad_clip
        if max_norm > 0 and grads:
            factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
            # Scaling each local shard scales the whole gradient, whatever its placement.
            torch._foreach_mul_([_local(g) for g in grads], factor)
        return total

    def _sum_and_count(self, values: list[torch.Tensor]) -> torch.Tensor:
        """(sum of `values`, their count) on this rank, built on the device: a blocking host-to-device
        copy would wait for everything queued. A rank holding no values gives (0, 0)."""
        zero = torch.zeros((), device=self.device)
        local = torch.stack([v.detach().float() for v in values]).sum() if values else zero
        return torch.stack([local, torch.full((), float(len(values)), device=self.device)])

    def _summed_over_ranks(self, packed: torch.Tensor) -> torch.Tensor:
        """`packed` summed over every rank, on the device."""
        packed = packed.to(self.device)
        dist.all_reduce(packed)
        return packed

    def _ratio_over_ranks(self, packed: torch.Tensor) -> float:
        """packed[0] / packed[1], both summed over every rank."""
        summed = self._summed_over_ranks(packed)
        return float(summed[0] / summed[1])

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the device without waiting: a pageable copy to CUDA would first wait for all
        queued work (the previous step); a pinned one is queued behind it instead."""
        if self.device.type != "cuda":
            return batch
        return batch.pin_memory().to(self.device, non_blocking=True)

    def _peak_memory(self) -> torch.Tensor | None:
        """Peak CUDA memory (GiB) of the busiest rank, on the device; None off CUDA. The allocator
        counts at queueing time, so this step's peak is known without waiting for it."""
        if self.device.type != "cuda":
            return None
        peak = torch.full((1,), torch.cuda.max_memory_allocated(self.device) / 2**30, device=self.device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return peak

    def _update(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Queue forward, backward and the optimizer update on this rank's batch: (this rank's
        microbatch losses, the global grad norm), both still on the device. The collectives here are
        the step's own math (gradients, the clip norm); none of them exists only to report."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._context():
            losses, _ = self.pipeline.step(self._to_device(inputs), self._to_device(targets))
        if self.dims.tp > 1:
            reduce_partial_grads(self.params)
        self._sync_tied_grads()
        grad_norm = self._clip_grads()
        self.optimizer.step()
        self.lr_schedule.step()
        return [_local(loss) for loss in losses], grad_norm

    def launch_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepStats:
        """Queue one optimizer step and the reductions of its loss (and peak memory) over the ranks;
        nothing here waits for the device. Every rank must take the same steps this way."""
        losses, grad_norm = self._update(inputs, targets)
        summed = self._summed_over_ranks(self._sum_and_count(losses))
        return StepStats(summed, grad_norm, self._peak_memory())

    def launch_quiet_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Queue one optimizer step whose figures nobody reads: no reduction beyond the step's math
        and no host read, so the ranks never meet only to report."""
        self._update(inputs, targets)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """(loss, grad norm) of one optimizer step on this rank's batch, waiting for it."""
        loss, grad_norm, _ = self.launch_step(inputs, targets).read()
        return loss, grad_norm

    def per_rank(self, value: float) -> list[float]:
        """`value` of every global rank, known on every rank."""
        values = torch.zeros(dist.get_world_size(), device=self.device)
        values[dist.get_rank()] = value
        dist.all_reduce(values)
        return values.tolist()

    @torch.no_grad()
    def evaluate(self, sampler: GlobalSampler, batches: int) -> EvalResult:
        for part in self.parts:
            part.eval()
        losses: list[torch.Tensor] = []
        correct = torch.zeros(2)  # hits, items
        for i in range(batches):
            inputs, targets = sampler.batch(i)
            with self._context():
                batch_losses, output = self.pipeline.step(
                    inputs.to(self.device), targets.to(self.device), train=False, outputs=self.task.accuracy
                )
            losses += [_local(loss) for loss in batch_losses]
            if output is not None and self.task.accuracy:
                hits = (_local(output).argmax(-1).cpu() == targets).sum()
                correct += torch.tensor([float(hits), float(targets.numel())])
        for part in self.parts:
            part.train()
        # Hits / items over the ranks holding the last stage (tp replicas count alike).
        accuracy = self._ratio_over_ranks(correct) if self.task.accuracy else None
        return EvalResult(self._ratio_over_ranks(self._sum_and_count(losses)), accuracy)
