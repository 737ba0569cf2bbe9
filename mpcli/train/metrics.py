"""Throughput, MFU and memory figures, and the metrics.jsonl writer (one JSON object per line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Dense bf16 peak TFLOP/s per GPU (no sparsity), matched against torch.cuda.get_device_name().
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
}


def peak_tflops(device_type: str, override: float | None) -> float | None:
    """Peak per device, or None (no MFU) on CPU or an unknown GPU without `train.peak_tflops`."""
    if override is not None:
        return override
    if device_type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def mfu(samples_per_s: float, flops_per_sample: float, *, devices: int, peak: float | None) -> float | None:
    if peak is None:
        return None
    return samples_per_s * flops_per_sample / (devices * peak * 1e12)


class MetricsWriter:
    """Appends records to run_dir/metrics.jsonl and flushes each, so the launcher can follow along."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _parse(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a metrics file (a line being written is skipped)."""
    if not path.exists():
        return []
    return _parse(path.read_text(encoding="utf-8").splitlines())


class MetricsTail:
    """Follows a metrics file as it grows: each `poll()` returns the records completed since the
    last one, reading only the bytes appended since (a whole re-read per poll would make following
    a long run quadratic). A last line still without its newline is kept until the newline comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0  # bytes of the file already read
        self._partial = b""  # the unfinished last line read so far

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                if f.seek(0, 2) < self.offset:  # a new file under the same name: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        complete, newline, self._partial = (self._partial + data).rpartition(b"\n")
        if not newline:
            return []
        return _parse(complete.decode("utf-8", errors="replace").splitlines())
