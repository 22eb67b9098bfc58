"""Measuring what a run costs: memory (process RSS, CUDA peak), wall time, parameters, disk size,
and a small metrics file per lab so docs tables are rendered from measurements, never hand-typed."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common_utils.core.artifacts import atomic_file

MB = 2**20


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / total {self.total:,} ({self.percent:.3f}%)"


def count_parameters(model) -> ParamCount:
    """Trainable and total parameters. 4-bit weights are packed two per byte, so they are counted
    by their logical element count (`quant_state.shape`) as peft's print_trainable_parameters does."""
    trainable = total = 0
    for parameter in model.parameters():
        quant_state = getattr(parameter, "quant_state", None)
        n = int(quant_state.shape.numel()) if quant_state is not None else parameter.numel()
        total += n
        if parameter.requires_grad:
            trainable += n
    return ParamCount(trainable, total)


def process_rss_mb() -> float:
    """Resident memory of this process in MB."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / MB


def cuda_peak_mb() -> float | None:
    """Peak CUDA memory allocated by torch since the last reset, or None without CUDA."""
    import torch

    return torch.cuda.max_memory_allocated() / MB if torch.cuda.is_available() else None


@dataclass
class PeakMemory:
    start_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    cuda_peak_mb: float | None = None

    @property
    def rss_increase_mb(self) -> float:
        return self.peak_rss_mb - self.start_rss_mb


@contextmanager
def track_peak_memory(interval_s: float = 0.05) -> Iterator[PeakMemory]:
    """Sample RSS in a background thread while the block runs; also reset and read the CUDA peak."""
    import torch

    result = PeakMemory(start_rss_mb=process_rss_mb())
    result.peak_rss_mb = result.start_rss_mb
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            result.peak_rss_mb = max(result.peak_rss_mb, process_rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result.peak_rss_mb = max(result.peak_rss_mb, process_rss_mb())
        result.cuda_peak_mb = cuda_peak_mb()


class Timer:
    """`with Timer() as t: ...` then `t.seconds`."""

    def __enter__(self) -> Timer:
        self.seconds = 0.0
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def dir_size_mb(path: str | Path) -> float:
    """Total size of the files under a folder, in MB."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / MB


def write_metrics(path: str | Path, section: str, values: dict[str, Any]) -> None:
    """Merge `values` under `section` into a JSON metrics file, written atomically.

    Returns nothing on purpose: a notebook cell ending in this call shows no growing metrics dict;
    read the file back with `read_metrics` when a cell needs it."""
    path = Path(path)
    data = read_metrics(path)
    data[section] = values
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=float), encoding="utf-8")


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def synchronize_cuda() -> None:
    """Wait for queued GPU work, so a timer around asynchronous CUDA kernels measures the kernels and
    not only their launch. A no-op on CPU; never imports torch itself (timing code already has)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed ones: the median
    resists the outliers a busy machine produces, so two configurations compare fairly. GPU work is
    waited for before and after each call (synchronize_cuda)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize_cuda()
        start = time.perf_counter()
        fn()
        synchronize_cuda()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
