"""Estimator speed: estimates per second over the presets (the term functions run directly, and
repeated structures from their compiled programs), and CLI cold start vs `import torch`.

Run: .venv/bin/python benchmarks/bench_estimator.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from estimator.estimate import estimate
from estimator.spec import Workload
from estimator.spec.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent
TGAUGE = str(Path(sys.executable).with_name("tgauge"))


def _workloads(name: str) -> list[Workload]:
    spec = PRESETS[name]
    s = spec.n_positions if spec.is_patch_input else 512
    out = [Workload(mode="train", seq_len=s), Workload(mode="prefill", seq_len=s)]
    if spec.arch != "encoder":
        out.append(Workload(mode="decode", seq_len=s, new_tokens=16))
    return out


def estimates_per_s(rounds: int = 5, direct: bool = False) -> tuple[int, float]:
    cases = [(PRESETS[n], w) for n in PRESETS for w in _workloads(n)]
    start = time.perf_counter()
    for _ in range(rounds):
        for spec, w in cases:
            estimate(spec, w, direct=direct)
    elapsed_s = time.perf_counter() - start
    return len(cases) * rounds, len(cases) * rounds / elapsed_s


def median_wall_s(cmd: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    n, direct = estimates_per_s(direct=True)
    estimates_per_s(rounds=50)  # repeated structures compile (estimator/compiled/)
    n_warm, rate = estimates_per_s(rounds=50)
    cli_s = median_wall_s([TGAUGE, "estimate", "gpt2-small", "--json"])
    torch_s = median_wall_s([sys.executable, "-c", "import torch"])
    rows = [
        ("estimate(direct=True) over presets x modes", f"{direct:,.0f} /s", f"{n} calls"),
        ("estimate() repeated (compiled)", f"{rate:,.0f} /s", f"{n_warm} calls"),
        ("tgauge estimate gpt2-small --json", f"{cli_s:.3f} s", "median of 5, cold process"),
        ('python -c "import torch"', f"{torch_s:.3f} s", "median of 5"),
        ("CLI / import torch", f"{cli_s / torch_s:.2f}x", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>12}  note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>12}  {note}")


if __name__ == "__main__":
    main()
