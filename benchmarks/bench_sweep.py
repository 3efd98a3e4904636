"""Points per second of estimator.plan.sweep on a 10,000-point grid (100 seq_len x 100 batch_size).

Run: .venv/bin/python benchmarks/bench_sweep.py [MODEL]
"""

from __future__ import annotations

import sys
import time

from estimator.plan.sweep import sweep
from estimator.spec import Workload
from estimator.spec.presets import get_preset


def main(model: str = "llama-3-8b") -> None:
    spec = get_preset(model)
    grid = {"seq_len": list(range(128, 128 * 101, 128)), "batch_size": list(range(1, 101))}
    # rope_scaling 2: seq_len runs to 12,928, past llama-3-8b's 8192 positions; every point
    # stays a full estimate rather than a refused one
    base = Workload(mode="train", dtype="bf16", rope_scaling=2.0)
    sweep(spec, base, {"seq_len": [128]})  # warm caches and imports
    try:  # the array evaluation's import (the structure itself compiles in the timed sweep)
        import numpy  # noqa: F401
    except ImportError:
        pass
    start = time.perf_counter()
    result = sweep(spec, base, grid, usable=80 * 2**30)
    elapsed = time.perf_counter() - start
    n = len(result.rows)
    print(f"{model}: {n} points in {elapsed:.2f} s = {n / elapsed:,.0f} points/s")


if __name__ == "__main__":
    main(*sys.argv[1:])
