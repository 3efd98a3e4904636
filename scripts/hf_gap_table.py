"""HF_KNOWN_GAPS of tests/tgauge/test_hf_matrix.py from a run of the matrix's HF section.

    tgauge validate --matrix --section hf --out DIR
    python scripts/hf_gap_table.py DIR/validation.jsonl   # paste over HF_KNOWN_GAPS

One entry per point whose saved activations (a term or the total) or peak miss 2%, or whose
peak is in another phase: predicted/measured, (predicted - measured) / measured.
"""

from __future__ import annotations

import json
import sys
import textwrap

TOLERANCE = 0.02
SHORT = (
    ("{self_attn,self_attn.scores,self_attn.scores.dropout,self_attn.mix,self_attn.sdpa}",
     "self_attn*"),
    ("{cross_attn,cross_attn.scores,cross_attn.scores.dropout,cross_attn.mix,cross_attn.sdpa}",
     "cross_attn*"),
    ("decoder.layers.", "dec."), ("encoder.layers.", "enc."), ("decoder.", "dec."),
    ("encoder.", "enc."),
)  # fmt: skip


def _error(row: dict) -> str:
    if not row["measured"]:
        return f"{row['predicted']:,}/0 B"
    return f"{100 * (row['predicted'] - row['measured']) / row['measured']:+.1f}%"


def gaps(point: dict) -> str:
    """'' when the point is within 2% everywhere, else what misses."""
    peak, saved = "", []
    for row in point["rows"]:
        term = row["term"]
        if not (term.startswith("memory.activations.") or term == "peak_memory"):
            continue
        if row["rel_error"] is not None and row["rel_error"] <= TOLERANCE:
            continue
        if term == "peak_memory":
            peak = f"peak {row['predicted']:,}/{row['measured']:,} B ({_error(row)})"
            continue
        term = term.removeprefix("memory.activations.")
        for long, short in SHORT:
            term = term.replace(long, short)
        saved.append(f"{term} {_error(row)}")
    parts = ([peak] if peak else []) + ([f"saved {', '.join(saved)}"] if saved else [])
    if point["peak_phase_predicted"] != point["peak_phase_measured"]:
        parts.append(f"phase {point['peak_phase_predicted']}/{point['peak_phase_measured']}")
    return "; ".join(parts)


def main(path: str) -> None:
    points = {}
    with open(path) as f:
        for line in f:
            point = json.loads(line)
            points[point["model"]] = point  # a later run of a point wins
    for name, point in points.items():
        text = gaps(point)
        if not text:
            continue
        head = f'    "{name}": '
        if len(head) + len(text) + 3 <= 100:
            print(f'{head}"{text}",')
            continue
        print(f'    "{name}": (')
        for chunk in textwrap.wrap(text, 88, drop_whitespace=False):
            print(f'        "{chunk}"')
        print("    ),")


if __name__ == "__main__":
    main(sys.argv[1])
