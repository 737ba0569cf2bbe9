"""When each rank computes during a few training steps: the data behind the report's bubble timeline.

For `train.timeline_steps` steps after one warm-up step (which also runs the pipeline's shape
inference), hooks on this rank's stage modules note the start and end of every microbatch's forward
and backward: forward pre/post hooks, a hook on the forward's output (its gradient arriving starts
the backward) and an autograd engine callback (the backward pass is over). The gaps between them
are where the rank waits for its neighbours: the pipeline bubble. Each rank writes
run_dir/timeline/rank_<N>.json after every recorded step; `mpcli report` draws it.

Times are seconds since a barrier at the start of the step, so the ranks line up (to the barrier's
skew) even across nodes, whose clocks differ. On GPU each hook synchronizes the device, but only
while recording, so that the times are those of the kernels and not of their launch.

Zero-bubble schedules run weight gradients apart from the backward, outside any module hook: that
time is not recorded and shows as idle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd import Variable
from torch.utils.hooks import RemovableHandle

WARMUP_STEPS = 1
TIMELINE_DIR = "timeline"


@dataclass
class Interval:
    kind: str  # "forward" or "backward"
    stage: int
    microbatch: int  # order of this kind of work on this stage within the step
    start: float  # seconds since the step's barrier
    end: float


@dataclass
class StepRecord:
    step: int  # 1-based, as in metrics.jsonl
    duration_s: float
    intervals: list[Interval] = field(default_factory=list)


def timeline_file(run_dir: Path, rank: int) -> Path:
    return run_dir / TIMELINE_DIR / f"rank_{rank}.json"


class StepTimeline:
    """Records `steps` steps of this rank's stages, after the first WARMUP_STEPS this process runs
    (a resumed run starts at its checkpoint's step)."""

    def __init__(self, stages: dict[int, nn.Module], steps: int, *, device: torch.device, run_dir: Path):
        self.stages, self.device = stages, device
        self.steps = steps
        self.recorded: range | None = None  # known at the first step
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.path = timeline_file(run_dir, self.rank)
        self.records: list[StepRecord] = []
        self._handles: list[RemovableHandle] = []
        self._t0: float | None = None  # set while a step is being recorded
        self._forward_start: dict[int, float] = {}

    def begin(self, step: int) -> None:
        """Call before step `step` (0-based) starts; a no-op unless the step is recorded."""
        if self.recorded is None:
            self.recorded = range(step + WARMUP_STEPS, step + WARMUP_STEPS + self.steps)
        if step not in self.recorded:
            return
        if not self._handles:
            self._attach()
        self._sync()
        if dist.is_initialized():
            dist.barrier()
            self._sync()
        self.records.append(StepRecord(step + 1, 0.0))
        self._t0 = time.perf_counter()

    def end(self, step: int) -> None:
        """Call when step `step` has finished; writes this rank's file after each recorded step."""
        if self._t0 is None:  # not a recorded step
            return
        self.records[-1].duration_s = self._now()
        self._t0 = None
        if self.recorded is not None and step == self.recorded[-1]:
            for handle in self._handles:
                handle.remove()
        self._write()

    def idle_fraction(self, step: int) -> float | None:
        """Share of recorded step `step` (0-based) this rank spent outside forward/backward work, or
        None if the step was not recorded. Zero-bubble weight passes are not hooked: they count as idle."""
        record = next((r for r in self.records if r.step == step + 1), None)
        if record is None or record.duration_s <= 0:
            return None
        busy = sum(i.end - i.start for i in record.intervals)
        return max(0.0, 1.0 - busy / record.duration_s)

    def _now(self) -> float:
        assert self._t0 is not None
        self._sync()
        return time.perf_counter() - self._t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _attach(self) -> None:
        for stage, module in self.stages.items():
            self._handles += [
                module.register_forward_pre_hook(self._on_forward_start(stage)),
                module.register_forward_hook(self._on_forward_end(stage)),
            ]

    def _add(self, kind: str, stage: int, start: float, end: float) -> None:
        done = sum(1 for i in self.records[-1].intervals if i.kind == kind and i.stage == stage)
        self.records[-1].intervals.append(Interval(kind, stage, done, start, end))

    def _on_forward_start(self, stage: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object) -> None:
            if self._t0 is not None:
                self._forward_start[stage] = self._now()

        return hook

    def _on_forward_end(self, stage: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if self._t0 is None or stage not in self._forward_start:
                return
            self._add("forward", stage, self._forward_start.pop(stage), self._now())
            outputs = output if isinstance(output, tuple | list) else (output,)
            tensor = next((t for t in outputs if isinstance(t, torch.Tensor) and t.requires_grad), None)
            if tensor is not None:
                tensor.register_hook(self._on_backward_start(stage))

        return hook

    def _on_backward_start(self, stage: int) -> Callable[[torch.Tensor], None]:
        """A hook on the stage's output: its gradient has arrived, so the stage's backward begins."""

        def hook(grad: torch.Tensor) -> None:
            if self._t0 is None:
                return
            start = self._now()
            # The backward ends when autograd has finished the whole pass, parameter gradients
            # included. torch's full backward hook would not do: on a first stage, whose inputs are
            # token ids that need no gradient, it fires when the backward starts.
            Variable._execution_engine.queue_callback(
                lambda: self._add("backward", stage, start, self._now())
            )

        return hook

    def _write(self) -> None:
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        data = {
            "rank": self.rank,
            "stages": sorted(self.stages),
            "device": self.device.type,
            "max_mem_gb": peak,
            "steps": [asdict(r) for r in self.records],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=1), encoding="utf-8")
