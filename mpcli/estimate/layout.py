"""The estimate of one layout: stages, per-rank memory and communication, bubble and step time.

Step-time model (used to rank layouts; absolute numbers are rough):

    gpu(rank)     = FLOPs of its stages per step / tp / (peak TFLOP/s x efficiency)
                    + 2 x v x M passes (forward, backward of one microbatch through one stage)
                      x a fixed cost per pass (Python scheduling, kernel launches, p2p latency)
    host(rank)    = tensor-parallel collectives it issues per step x a fixed cost per collective
    compute(rank) = max(gpu, host)
    step = max over ranks of compute x (1 + bubble / (1 - bubble))            [= compute / (1 - bubble)]
           + max over ranks of (tp bytes / tp bandwidth + fsdp bytes / dp bandwidth
                                + (p2p + tied) bytes / pp bandwidth)

The fixed cost per pass is what makes many tiny microbatches slower than a few large ones. The cost
per tensor-parallel collective is empirical: with GPT-2-sized blocks the ranks were measured host-bound
at ~1 ms per collective issued, whatever its size, while the 7B recipe's larger blocks stayed nearer
the GPU bound; 0.8 ms puts the estimates of those three runs within -12%..+21% (gpt2-large tp2 at 1 x 16,
pp2 x tp2 at 8 x 4, gpt-7b; H200, torch 2.11; docs/performance.md).

Communication is not assumed to overlap with compute (a conservative choice). A mesh axis whose group
stays inside one node uses the intra-node bandwidth, otherwise the inter-node one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from mpcli.config.schema import RunConfig
from mpcli.estimate.comm import CommVolume, rank_comm
from mpcli.estimate.memory import RankMemory, rank_memory
from mpcli.estimate.profile import ModelProfile
from mpcli.estimate.schedule import bubble_fraction
from mpcli.estimate.stages import Stage, build_stages
from mpcli.parallel.partition import choose_split


@dataclass(frozen=True)
class CostModel:
    """Assumptions of the step-time model (documented in the README's "Planning a layout")."""

    peak_tflops: float = 989.0  # dense bf16 per GPU (H100 SXM / H200); train.peak_tflops overrides
    efficiency: float = 0.4  # share of the peak that the model's matmuls reach
    intra_node_gb_s: float = 300.0  # achieved GB/s per GPU inside a node (NVLink)
    inter_node_gb_s: float = 25.0  # achieved GB/s per GPU between nodes (200-400 Gb/s InfiniBand)
    pass_overhead_s: float = 1e-3  # fixed cost of one stage's forward or backward of one microbatch
    tp_collective_s: float = 0.8e-3  # host time per tensor-parallel collective issued (fitted, H200)
    headroom: float = 0.9  # plan at most this share of --gpu-mem (CUDA context, fragmentation, NCCL)


@dataclass
class LayoutEstimate:
    run: RunConfig
    stages: list[Stage]
    memory: list[RankMemory]  # one per pipeline rank (every dp / tp rank there alike)
    comm: list[CommVolume]
    bubble: float
    bf16: bool

    @property
    def microbatch_size(self) -> int:
        return self.run.train.microbatch_size

    @property
    def world(self) -> int:
        p = self.run.parallel
        return p.pp * p.dp * p.tp

    @property
    def imbalance(self) -> float:
        """Most expensive stage's FLOPs over the mean (1.0 = perfectly balanced)."""
        flops = [s.flops for s in self.stages]
        return max(flops) / statistics.mean(flops) if statistics.mean(flops) > 0 else 1.0

    @property
    def peak(self) -> float:
        return max(m.total for m in self.memory)

    def rank_flops(self, pp_rank: int) -> float:
        """FLOPs one rank at this pipeline coordinate computes per step."""
        p = self.run.parallel
        per_sample = sum(s.flops for s in self.stages if s.pp_rank == pp_rank)
        return per_sample * self.microbatch_size * p.microbatches / p.tp

    def _bandwidths(self, cost: CostModel) -> tuple[float, float, float]:
        """GB/s of the tp, dp and pp groups: intra-node when the group fits in one node."""
        p, per_node = self.run.parallel, self.world // self.run.topology.nnodes
        pick = lambda span: cost.intra_node_gb_s if span <= per_node else cost.inter_node_gb_s  # noqa: E731
        return pick(p.tp), pick(p.tp * p.dp), pick(self.world)

    def step_time(self, cost: CostModel) -> float:
        peak = (self.run.train.peak_tflops or cost.peak_tflops) * 1e12 * cost.efficiency
        p = self.run.parallel
        passes = 2 * p.virtual_stages * p.microbatches
        compute = max(
            max(
                self.rank_flops(m.pp_rank) / peak + passes * cost.pass_overhead_s,
                c.tp_calls * cost.tp_collective_s,
            )
            for m, c in zip(self.memory, self.comm, strict=True)
        )
        tp_bw, dp_bw, pp_bw = (bw * 1e9 for bw in self._bandwidths(cost))
        comm = max(c.tp / tp_bw + c.fsdp / dp_bw + (c.p2p + c.tied) / pp_bw for c in self.comm)
        return compute / (1 - self.bubble) + comm

    def samples_per_step(self) -> int:
        p = self.run.parallel
        return self.microbatch_size * p.microbatches * p.dp


def resolve_split(run: RunConfig, profile: ModelProfile) -> list[int]:
    """`parallel.split` as training resolves it for uniform / params / flops balance, from the profile."""
    return choose_split(
        run, lambda balance: profile.param_costs() if balance == "params" else profile.flop_costs(1)
    )


def estimate(run: RunConfig, profile: ModelProfile, *, bf16: bool, compiled: bool = False) -> LayoutEstimate:
    """Estimate `run`'s layout under bf16 autocast or not, with torch.compile or not (it fuses the loss).
    `parallel.balance=time` needs `parallel.split` resolved beforehand."""
    if run.parallel.split is None and run.parallel.balance != "time":
        run = replace(run, parallel=replace(run.parallel, split=resolve_split(run, profile)))
    stages = build_stages(run, profile)
    mbs = run.train.microbatch_size
    ranks = range(run.parallel.pp)
    memory = [rank_memory(run, stages, r, microbatch_size=mbs, bf16=bf16, compiled=compiled) for r in ranks]
    comm = [rank_comm(run, profile, stages, r, microbatch_size=mbs, bf16=bf16) for r in ranks]
    return LayoutEstimate(run, stages, memory, comm, bubble_fraction(run.parallel), bf16)
