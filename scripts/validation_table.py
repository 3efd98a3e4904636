"""Markdown table of a validation.jsonl (tgauge validate --out): one line per point.

Usage: .venv/bin/python scripts/validation_table.py docs/validation/cpu/validation.jsonl
       (--workload: name each point by its model and workload: mode, b, s, attention)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| case | device | rows | exact | within (worst rel. error) | off | not measured "
    "| peak predicted / measured (error) | peak phase predicted / measured |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _mib(n: int) -> str:
    return f"{n / 2**20:.3f} MiB"


def _name(point: dict, workload: bool) -> str:
    if not workload:
        return point["model"]
    w = point["workload"]
    return (
        f"{point['model']} {w['mode']} b={w['batch_size']} s={w['seq_len']} {w['attention_impl']}"
    )


def line(point: dict, workload: bool = False) -> str:
    rows = point["rows"]
    count = {v: sum(r["verdict"] == v for r in rows) for v in ("exact", "within", "off")}
    unmeasured = sum(r["verdict"] == "not measured" for r in rows)
    within = [r["rel_error"] for r in rows if r["verdict"] == "within"]
    worst = f" ({100 * max(within):.2f}%)" if within else ""
    peak = next((r for r in rows if r["term"] == "peak_memory"), None)
    peak_txt = "-"
    if peak is not None:
        err = 100 * (peak["predicted"] - peak["measured"]) / peak["measured"]
        peak_txt = f"{_mib(peak['predicted'])} / {_mib(peak['measured'])} ({err:+.2f}%)"
    phases = f"{point.get('peak_phase_predicted')} / {point.get('peak_phase_measured') or '-'}"
    return (
        f"| {_name(point, workload)} | {point['device']} | {len(rows)} | {count['exact']} "
        f"| {count['within']}{worst} | {count['off']} | {unmeasured} | {peak_txt} | {phases} |"
    )


def table(path: Path, workload: bool = False) -> str:
    points = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    points = [p for p in points if not p.get("superseded")]  # a newer record follows
    return "\n".join([HEADER, *(line(p, workload) for p in points)])


if __name__ == "__main__":
    args = sys.argv[1:]
    print(table(Path(next(a for a in args if a != "--workload")), "--workload" in args))
