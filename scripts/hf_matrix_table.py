"""The per-family table of docs/validation.md ("The matrix's HF section") from a run of it.

    tgauge validate --matrix --section hf --out docs/validation/cpu-hf
    python scripts/hf_matrix_table.py docs/validation/cpu-hf/validation.jsonl

One row per family and mode (autocast cases apart), over the points of that row (2 kernels x
2 sizes); an error is
(predicted - measured) / measured. Saved activations: the worst term (any term, the total
included) by absolute error.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _pct(x: float) -> str:
    if x == 0:
        return "exact"
    return f"{100 * x:+.1f}%" if abs(x) >= 0.001 else f"{100 * x:+.3f}%"


def _span(errors: list[float]) -> str:
    if not errors:
        return "-"
    lo, hi = min(errors), max(errors)
    return _pct(lo) if lo == hi else f"{_pct(lo)} to {_pct(hi)}"


def _bytes(off: list[int]) -> str:
    worst = max(off, key=abs, default=0)
    return f" (worst {worst:+,} B)" if worst else ""


def _verdict(rows: list[dict], prefix: str, eager_only: bool = False) -> str:
    chosen = [r for r in rows if r["term"].startswith(prefix)]
    if not chosen:
        return "-"
    if all(r["measured"] is None for r in chosen):
        return "not measured"
    return "exact" if all(r["verdict"] in ("exact", "not measured") for r in chosen) else "off"


def main(path: str) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in open(path, encoding="utf-8"):
        point = json.loads(line)
        if point.get("superseded"):  # a newer record of the point follows
            continue
        family, w = point["model"].split()[1], point["workload"]
        mode = w["mode"] + (f" autocast {w['autocast']}" if w.get("autocast") else "")
        groups[(family, mode)].append(point)
    print(
        "| family | mode | points | params | eager FLOPs | KV cache (every step) "
        "| saved activations, worst term | peak | phase right |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (family, mode), points in groups.items():
        params, flops, kv, acts, peaks, off, phase = set(), set(), set(), [], [], [], 0
        for p in points:
            rows = p["rows"]
            params.add(_verdict(rows, "params."))
            if p["workload"]["attention_impl"] == "eager":
                flops.add(_verdict(rows, "flops."))
            kv.add(_verdict(rows, "kv_cache."))
            worst = [
                r["rel_error"] if r["predicted"] >= r["measured"] else -r["rel_error"]
                for r in rows
                if r["term"].startswith("memory.activations.") and r["measured"]
            ]
            if worst:
                acts.append(max(worst, key=abs))
            for r in rows:
                if r["term"] == "peak_memory":
                    peaks.append((r["predicted"] - r["measured"]) / r["measured"])
                    off.append(r["predicted"] - r["measured"])
            phase += p["peak_phase_predicted"] == p["peak_phase_measured"]
        print(
            f"| {family} | {mode} | {len(points)} | {', '.join(sorted(params))} "
            f"| {', '.join(sorted(flops))} | {', '.join(sorted(kv))} | {_span(acts)} "
            f"| {_span(peaks)}{_bytes(off)} | {phase}/{len(points)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/validation/cpu-hf/validation.jsonl")
