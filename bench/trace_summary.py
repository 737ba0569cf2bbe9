"""Summarise torch.profiler traces of one step window, one rank per file: where the GPU time went.

Usage: python bench/run.py trace-summary OUT/trace_<name>_rank*.json.gz   (from `run.py profile --trace`,
`run.py probe` or `run.py one-rank --profile DIR`)

Per rank: the window; how long compute kernels and NCCL kernels kept the GPU busy and how long it sat
idle (starved by its CPU); how long the busiest host thread ran operators and launches in the window
(near the whole window: host-bound); how far the GPU ran behind the CPU (launch to start; near zero:
CPU-bound);
and per collective kind and size the count and the mean/min/max kernel time. A collective whose
minimum is far below its mean spends the difference waiting for another rank: the rank whose
collectives are short is the one the others wait for.
"""

from __future__ import annotations

import gzip
import json
import statistics
from collections import defaultdict

Interval = tuple[float, float]


def busy_ms(events: list[dict]) -> float:
    """Time covered by the union of `events`' intervals (overlapping kernels counted once)."""
    total, current = 0.0, None
    for start, end in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if current is None or start > current[1]:
            total += current[1] - current[0] if current else 0.0
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    return (total + (current[1] - current[0] if current else 0.0)) / 1000


HOST_CATEGORIES = ("cpu_op", "cuda_runtime", "cuda_driver")


def host_busy_ms(events: list[dict], start: float, end: float) -> float:
    """Busy time of the busiest host thread between `start` and `end` (µs): the union of its operator
    and CUDA API intervals (time between operators, in plain Python, is not counted)."""
    by_thread: dict[object, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("cat") in HOST_CATEGORIES and e["ts"] >= start and e["ts"] + e["dur"] <= end:
            by_thread[e.get("tid")].append(e)
    return max((busy_ms(thread) for thread in by_thread.values()), default=0.0)


def summarise(path: str) -> str:
    with gzip.open(path) as file:
        events = [e for e in json.load(file)["traceEvents"] if e.get("ph") == "X"]
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        return f"{path}: no GPU kernels (a CPU run?)"
    nccl = [e for e in kernels if "nccl" in e["name"].lower()]
    compute = [e for e in kernels if "nccl" not in e["name"].lower()]
    first, last = min(e["ts"] for e in kernels), max(e["ts"] + e["dur"] for e in kernels)
    window = (last - first) / 1000
    host = host_busy_ms(events, first, last)
    launches = {
        e["args"]["correlation"]: e["ts"]
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
    }
    lags = [
        (e["ts"] - launches[e["args"]["correlation"]]) / 1000
        for e in compute
        if e.get("args", {}).get("correlation") in launches
    ]
    lines = [
        f"{path}: window {window:.1f} ms, compute busy {busy_ms(compute):.1f} ms, "
        f"NCCL busy {busy_ms(nccl):.1f} ms, idle {window - busy_ms(kernels):.1f} ms, host busy {host:.1f} ms "
        f"({host / window:.0%}), GPU behind CPU by "
        + (f"{statistics.median(lags):.2f} ms (median)" if lags else "? ms")
    ]
    kinds: dict[tuple[str, object, object], list[float]] = defaultdict(list)
    for e in nccl:
        args = e.get("args", {})
        kinds[(e["name"].split("(")[0], args.get("In msg nelems"), args.get("dtype"))].append(e["dur"] / 1000)
    for (name, elements, dtype), durations in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        mean = statistics.mean(durations)
        lines.append(
            f"  {name} {elements} x {dtype}: {len(durations)} calls, "
            f"mean {mean:.3f} ms, min {min(durations):.3f}, max {max(durations):.3f}"
        )
    return "\n".join(lines)
