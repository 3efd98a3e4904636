"""Wall time: warm-up calls, then repeats; median, min, max. CUDA events on GPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from profiler.results import Measured, Timing


def time_fn(
    fn: Callable[[], Any], device: str = "cpu", *, warmup: int = 1, repeats: int = 3
) -> Measured[Timing]:
    """Time ``fn()``; on the meta device nothing runs, so nothing is timed."""
    import torch

    kind = torch.device(device).type
    if kind == "meta":
        return Measured.missing("meta device: no kernels run")
    if kind == "cuda" and not torch.cuda.is_available():
        return Measured.missing("CUDA is not available")
    for _ in range(warmup):
        fn()
    times = [_cuda_time(fn) if kind == "cuda" else _cpu_time(fn) for _ in range(repeats)]
    return Measured.of(
        Timing(
            median_s=statistics.median(times),
            min_s=min(times),
            max_s=max(times),
            repeats=repeats,
            warmup=warmup,
            clock="cuda_events" if kind == "cuda" else "perf_counter",
        )
    )


def _cpu_time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cuda_time(fn: Callable[[], Any]) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000.0
