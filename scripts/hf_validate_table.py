"""The HF table of docs/validation.md: `tgauge validate CONFIG.json --hf` of the seven tiny
families (tests/hf_tiny.py) x eager / fused attention, one training step (b=2, s=16; ViT s=17).

Run from the repository root: `PYTHONPATH=. python scripts/hf_validate_table.py`
"""

from __future__ import annotations

import sys

sys.path.insert(0, "tests")  # tests/hf_tiny.py: the tiny configs

from hf_tiny import CONFIGS  # noqa: E402

from estimator.spec import ModelSpec, Workload  # noqa: E402
from tgauge.validate import validate_point  # noqa: E402

HEADER = (
    "| model | attention | params | FLOPs fwd / bwd | saved activations pred / meas (err) "
    "| peak pred / meas (err) | phase pred / meas |"
)


def _pair(row) -> str:
    err = (row.predicted - row.measured) / row.measured
    return f"{row.predicted:,} / {row.measured:,} ({err:+.1%})"


def main() -> None:
    print(HEADER)
    print("|---|---|---|---|---|---|---|")
    for family, cfg in CONFIGS.items():
        for attention in ("eager", "fused"):
            s = 17 if family == "vit" else 16
            w = Workload(batch_size=2, seq_len=s, attention_impl=attention)
            p = validate_point(ModelSpec.from_hf_config(cfg), w, hf_config=cfg)
            rows = {r.term: r for r in p.rows}
            params = {r.verdict for t, r in rows.items() if t.startswith("params.")}
            flops = " / ".join(rows[f"flops.{ph}.total"].verdict for ph in ("forward", "backward"))
            acts, peak = rows["memory.activations.total"], rows["peak_memory"]
            print(
                f"| {cfg['architectures'][0]} | {attention} | {', '.join(sorted(params))} "
                f"| {flops} | {_pair(acts)} | {_pair(peak)} "
                f"| {p.peak_phase_predicted} / {p.peak_phase_measured} |"
            )


if __name__ == "__main__":
    main()
