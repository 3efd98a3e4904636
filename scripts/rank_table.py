"""Rows of docs/validation.md's per-rank table (peak predicted / measured per rank, and the
phase) for cases of tests/tgauge/test_parallel_predicted_vs_measured.py, measured anew:

    PYTHONPATH=. python scripts/rank_table.py zero3-2 zero3-titan-2 ...
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def main(cases: list[str]) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    path = ROOT / "tests/tgauge/test_parallel_predicted_vs_measured.py"
    spec = importlib.util.spec_from_file_location("parallel_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for case in cases or list(module.CASES):
        p = module.point(case)
        peaks = {r.rank: (r.predicted, r.measured) for r in p.rows if r.term == "peak_memory"}
        groups: dict[tuple[int, int], list[str]] = {}
        for rank, pair in sorted(peaks.items()):
            groups.setdefault(pair, []).append(str(rank))
        cells = "<br>".join(
            f"{'/'.join(ranks)}: {a:,} / {b:,} ({(a - b) / b * 100:+.2f}%)"
            for (a, b), ranks in groups.items()
        )
        phases = {k: (p.peak_phase_predicted.get(k), p.peak_phase_measured.get(k)) for k in peaks}
        one = {a for a, b in phases.values() if a == b}
        if len(one) == 1 and all(a == b for a, b in phases.values()):
            phase = one.pop()
        else:
            phase = "; ".join(f"r{k}: {a} / {b}" for k, (a, b) in phases.items())
        print(f"{case} | {cells} | {phase}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
