"""bench/trace_summary.py on a synthetic two-thread trace: GPU busy/idle, host busy, launch lag."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.conftest import bench_module


def _event(cat: str, ts: float, dur: float, tid: int = 1, **args: object) -> dict:
    return {"ph": "X", "cat": cat, "name": f"{cat}@{ts}", "ts": ts, "dur": dur, "tid": tid, "args": args}


def test_summary_of_a_host_bound_window(tmp_path: Path) -> None:
    events = [
        _event("cuda_runtime", 1050, 20, correlation=7),  # the launch, before the window
        _event("kernel", 1100, 2000, tid=0, correlation=7),  # compute: 1.1-3.1 ms
        _event("kernel", 3500, 1000, tid=0),  # the window ends at 4.5 ms
        _event("cpu_op", 1200, 1500),  # host thread 1: 1.2-2.7 ms ...
        _event("cpu_op", 1300, 200),  # ... nested: counted once
        _event("cpu_op", 3000, 800),  # ... and 3.0-3.8 ms: 2.3 ms in all
        _event("cpu_op", 1500, 100, tid=2),  # a quieter thread
    ]
    events[2]["name"] = "ncclDevKernel_AllGather_RING_LL(args)"
    trace = tmp_path / "trace_rank0.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": events}, f)
    line = bench_module("trace_summary").summarise(str(trace)).splitlines()[0]
    assert "window 3.4 ms, compute busy 2.0 ms, NCCL busy 1.0 ms, idle 0.4 ms" in line
    assert "host busy 2.3 ms (68%)" in line
    assert "GPU behind CPU by 0.05 ms" in line
