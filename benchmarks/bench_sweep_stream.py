"""Peak memory (max RSS) and time of `tgauge sweep --out` on a 1,000,000-point grid (the most
a sweep may have: 1000 seq_len x 1000 batch_size), run as a real process.

The rows are streamed to sweep.csv / sweep.json a chunk at a time (estimator/plan/sweep.py
sweep_chunks), so the peak stays that of one chunk whatever the grid size; before issue 24 a
524,288-point sweep held 2.0 GB and wrote its 385 MB at the end.

Run: .venv/bin/python benchmarks/bench_sweep_stream.py [POINTS_PER_AXIS]
Measured (issue 24, 2 shared CPU cores, Python 3.11, numpy installed):
    sweep --out of 1,000,000 points: 106.8 s, max RSS 70 MiB, 542 MiB written
    (160,000 points: 12.3 s, 69 MiB; 10,000: 3.4 s, 67 MiB: the peak does not grow)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(axis: int = 1000) -> tuple[float, int, int]:
    """(seconds, max RSS bytes, bytes written) of one sweep of axis x axis points."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "tgauge.cli", "sweep", "gpt2-small",
                "--vary", f"seq_len=1..{axis}:1", "--vary", f"batch_size=1..{axis}:1",
                "--out", out]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"tgauge sweep failed: {status}")
        written = sum(p.stat().st_size for p in Path(out).iterdir())
        return elapsed, usage.ru_maxrss * 1024, written  # Linux: ru_maxrss in KiB


def main(axis: str = "1000") -> None:
    n = int(axis) ** 2
    elapsed, rss, written = run(int(axis))
    print(
        f"sweep --out of {n:,} points: {elapsed:.1f} s, max RSS {rss / 2**20:,.0f} MiB, "
        f"{written / 2**20:,.0f} MiB written"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
