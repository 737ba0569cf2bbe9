"""The estimate of one layout: stages, per-rank memory and communication, bubble and step time.

Step-time model (used to rank layouts; absolute numbers are rough), per rank:

    gpu(rank)     = FLOPs of its stages per step / tp / (peak TFLOP/s x efficiency)
                    + 2 x v x M stage passes (forward, backward of one microbatch through one stage)
                      x a fixed cost per pass (schedule, kernel launches, p2p latency)
    host(rank)    = a fixed cost per step (optimizer, clipping, loss statistics)
                    + 2 x M x its blocks block passes x a fixed cost per block pass (kernel launches)
                    + tensor-parallel collectives it issues per step x a fixed cost per collective
    step = max over ranks of max(gpu / (1 - bubble), host)
           + max over ranks of (tp bytes / tp bandwidth + fsdp bytes / dp bandwidth
                                + (p2p + tied) bytes / pp bandwidth)

The fixed costs per pass and per block pass are what make many small microbatches slower than fewer
large ones (a small model in small microbatches is host-bound even on one GPU); the cost per
collective is what leaves GPT-2-sized tensor-parallel ranks waiting on their hosts. Efficiency, the
bandwidth inside a node and the fixed costs are fitted (`bench/fit_step_model.py`) to the 24 runs in
`bench/measured_steps.csv` (H200, torch 2.11, compiled, bf16; one GPU, pp2, pp4, tp2, pp2 x tp2 and the
7B recipe, gpt2-small to 7B, microbatches of 2 to 64): the estimates fall within -16%..+21% of the
measured steps, 7.6% root mean square. Host-bound steps vary most: the same run's host time differed
by 30% between two machines of one kind. The bandwidth between nodes is assumed (no multi-node run
measured).

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
    efficiency: float = 0.50  # share of the peak the GPU work reaches, launch overheads aside (fitted)
    intra_node_gb_s: float = 150.0  # achieved GB/s per GPU inside a node, on the critical path (fitted)
    inter_node_gb_s: float = 25.0  # achieved GB/s per GPU between nodes (200-400 Gb/s InfiniBand)
    pass_overhead_s: float = 3.0e-3  # one stage's forward or backward of one microbatch (fitted)
    tp_collective_s: float = 0.5e-3  # host time per tensor-parallel collective issued (fitted)
    block_pass_s: float = 1.1e-3  # host time per block's forward or backward of one microbatch (fitted)
    step_host_s: float = 4e-3  # host time per step outside the blocks: optimizer, clipping, stats (fitted)
    headroom: float = 0.9  # plan at most this share of --gpu-mem (CUDA context, fragmentation, NCCL)


@dataclass(frozen=True)
class StepTerms:
    """What one rank's step costs, before the cost model turns it into seconds."""

    flops: float  # computed per step
    passes: int  # stage forwards and backwards of one microbatch per step
    block_passes: int  # block forwards and backwards of one microbatch per step (kernels to launch)
    tp_calls: float  # tensor-parallel collectives issued per step
    bubble: float  # idle share of the pipeline schedule
    comm_bytes: tuple[float, float, float]  # sent per step over the tp, dp and pp groups

    def compute_s(self, cost: CostModel, peak_tflops: float) -> float:
        return max(self.gpu_s(cost, peak_tflops) / (1 - self.bubble), self.host_s(cost))

    def gpu_s(self, cost: CostModel, peak_tflops: float) -> float:
        """GPU time of the step: the work at the model's efficiency plus the fixed cost per pass."""
        return self.flops / (peak_tflops * 1e12 * cost.efficiency) + self.passes * cost.pass_overhead_s

    def host_s(self, cost: CostModel) -> float:
        """Host time to issue the step: its fixed part, each block pass's kernels, each tensor-parallel
        collective."""
        return cost.step_host_s + self.block_passes * cost.block_pass_s + self.tp_calls * cost.tp_collective_s

    def comm_s(self, bandwidths: tuple[float, ...]) -> float:
        """Seconds to send `comm_bytes` at the tp, dp and pp groups' bytes/s, not overlapped."""
        return sum(size / bw for size, bw in zip(self.comm_bytes, bandwidths, strict=True))


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

    def step_terms(self, pp_rank: int) -> StepTerms:
        """The parts of the step-time model for the ranks at pipeline coordinate `pp_rank`."""
        p, comm = self.run.parallel, self.comm[pp_rank]
        blocks = sum(len(s.blocks) for s in self.stages if s.pp_rank == pp_rank)
        return StepTerms(
            flops=self.rank_flops(pp_rank),
            passes=2 * p.virtual_stages * p.microbatches,
            block_passes=2 * blocks * p.microbatches,
            tp_calls=comm.tp_calls,
            bubble=self.bubble,
            comm_bytes=(comm.tp, comm.fsdp, comm.p2p + comm.tied),
        )

    def step_time(self, cost: CostModel) -> float:
        peak_tflops = self.run.train.peak_tflops or cost.peak_tflops
        bandwidths = tuple(bw * 1e9 for bw in self._bandwidths(cost))
        terms = [self.step_terms(m.pp_rank) for m in self.memory]
        return max(t.compute_s(cost, peak_tflops) for t in terms) + max(t.comm_s(bandwidths) for t in terms)

    def host_bound_note(self, cost: CostModel) -> str | None:
        """Where a rank's host time to issue its step exceeds its GPU time: by how much, and what helps."""
        peak_tflops = self.run.train.peak_tflops or cost.peak_tflops
        for m in self.memory:
            terms = self.step_terms(m.pp_rank)
            gpu, host = terms.gpu_s(cost, peak_tflops), terms.host_s(cost)
            if host > gpu:
                collectives = f", {terms.tp_calls:,.0f} tensor-parallel collectives" if terms.tp_calls else ""
                return (
                    f"host-bound: pp rank {m.pp_rank} issues {terms.block_passes:,} block passes"
                    f"{collectives} per step (~{host * 1e3:,.0f} ms of host time) for ~{gpu * 1e3:,.0f} ms "
                    "of GPU work; fewer, larger microbatches (train.microbatch_size) give each launch "
                    "more work"
                )
        return None

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
