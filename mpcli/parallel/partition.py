"""Balanced pipeline splits: block costs by parameters, FLOPs or measured time, then a min-max split.

The first stage also carries the model's first parts (e.g. embeddings) and the last stage its last
parts (e.g. the output head and loss), so their costs are counted there. The split never drops,
repeats or empties a block: it is a list of block counts per stage that adds up to the block count.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mpcli.config.schema import RunConfig
from mpcli.models import build_model, materialize
from mpcli.models.base import StagedModel


@dataclass
class Costs:
    first: float  # first parts (on the first stage)
    blocks: list[float]
    last: float  # last parts (on the last stage)


def even_split(n_blocks: int, stages: int) -> list[int]:
    """Equal block counts per stage, the extra blocks on the first stages."""
    return [n_blocks // stages + (i < n_blocks % stages) for i in range(stages)]


def min_max_split(costs: Costs, stages: int) -> list[int]:
    """Block counts per stage minimising the most expensive stage (dynamic programming)."""
    n = len(costs.blocks)
    if not 1 <= stages <= n:
        raise ValueError(f"cannot split {n} blocks into {stages} non-empty stages")
    prefix = [0.0]
    for c in costs.blocks:
        prefix.append(prefix[-1] + c)

    def stage_cost(i: int, j: int, s: int) -> float:  # blocks [i, j) as stage s
        extra = (costs.first if s == 0 else 0.0) + (costs.last if s == stages - 1 else 0.0)
        return prefix[j] - prefix[i] + extra

    @cache
    def best(s: int, i: int) -> tuple[float, tuple[int, ...]]:
        """Cheapest max cost splitting blocks [i, n) into stages s.. stages-1."""
        if s == stages - 1:
            return stage_cost(i, n, s), (n - i,)
        options = []
        for j in range(i + 1, n - (stages - s - 1) + 1):
            rest, counts = best(s + 1, j)
            options.append((max(stage_cost(i, j, s), rest), (j - i, *counts)))
        return min(options)

    return list(best(0, 0)[1])


def _parts(model: StagedModel) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    first = [getattr(model, name) for name in model.first_parts if getattr(model, name) is not None]
    last = [getattr(model, name) for name in model.last_parts if getattr(model, name) is not None]
    return first, list(model.blocks.values()), last


def param_costs(run: RunConfig) -> Costs:
    model = build_model(run.model)  # meta device: counting is free
    first, blocks, last = _parts(model)
    count = lambda modules: float(sum(p.numel() for m in modules for p in m.parameters()))  # noqa: E731
    return Costs(count(first), [count([b]) for b in blocks], count(last))


def _example_batch(run: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from mpcli.data.datasets import load_datasets

    train_set, _ = load_datasets(run.data, run.model, seed=run.train.seed)
    return train_set.items(list(range(run.train.microbatch_size)))


def flop_costs(run: RunConfig) -> Costs:
    """FLOPs of one microbatch forward + backward, counted by torch on the meta device."""
    from mpcli.models import task_of

    model = build_model(run.model)
    inputs, targets = _example_batch(run)
    counter = FlopCounterMode(display=False)
    with counter:
        task_of(run.model).loss_fn(model(inputs.to("meta")), targets.to("meta")).backward()
    by_module = counter.get_flop_counts()
    flops = lambda prefix: float(sum(by_module.get(f"{type(model).__name__}.{prefix}", {}).values()))  # noqa: E731
    first = sum(flops(name) for name in model.first_parts)
    last = sum(flops(name) for name in model.last_parts)
    return Costs(first, [flops(f"blocks.{key}") for key in model.blocks], last)


def time_costs(run: RunConfig, device: torch.device, repeats: int = 3) -> Costs:
    """Median measured forward + backward seconds of each part on one microbatch."""
    from mpcli.models import task_of

    model = build_model(run.model)
    materialize(model, device, run.train.seed)
    first, blocks, last = _parts(model)
    spent: dict[int, float] = {}
    starts: dict[int, float] = {}

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timer(module: nn.Module) -> None:
        def start(*_: object) -> None:  # hooks must return None, or they replace arguments
            sync()
            starts[id(module)] = time.perf_counter()

        def stop(*_: object) -> None:
            sync()
            spent[id(module)] = spent.get(id(module), 0.0) + time.perf_counter() - starts[id(module)]

        module.register_forward_pre_hook(start)
        module.register_forward_hook(stop)
        module.register_full_backward_pre_hook(start)
        module.register_full_backward_hook(stop)

    for module in [*first, *blocks, *last]:
        timer(module)
    inputs, targets = (t.to(device) for t in _example_batch(run))
    samples: list[dict[int, float]] = []
    with warnings.catch_warnings():  # the first part's inputs (token ids) need no gradient: expected
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(repeats + 1):  # the first pass warms up allocators and kernels
            spent.clear()
            task_of(run.model).loss_fn(model(inputs), targets).backward()
            samples.append(dict(spent))
    median = {key: statistics.median(s.get(key, 0.0) for s in samples[1:]) for key in samples[-1]}
    total = lambda modules: sum(median.get(id(m), 0.0) for m in modules)  # noqa: E731
    return Costs(total(first), [total([b]) for b in blocks], total(last))


def choose_split(run: RunConfig, costs_of: Callable[[str], Costs]) -> list[int]:
    """Block counts per stage: an explicit `parallel.split` wins; `uniform` (or a single stage) splits
    evenly; otherwise a min-max split of `costs_of(parallel.balance)`. Training measures the costs,
    the planner reads them from its profile."""
    stages = run.parallel.pp * run.parallel.virtual_stages
    if run.parallel.split is not None:
        return list(run.parallel.split)
    if run.parallel.balance == "uniform" or stages == 1:
        return even_split(run.model.n_blocks, stages)
    return min_max_split(costs_of(run.parallel.balance), stages)


def balanced_split(run: RunConfig, device: torch.device) -> list[int]:
    """`choose_split` with costs measured on this model (time: on `device`)."""
    measure = {"params": param_costs, "flops": flop_costs, "time": lambda r: time_costs(r, device)}
    return choose_split(run, lambda balance: measure[balance](run))
