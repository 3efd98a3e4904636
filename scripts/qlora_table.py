"""The QLoRA table of docs/validation.md (issue 20): the 4-bit tiny HF Llama and GPT-2 that
transformers loads with bitsandbytes on CPU, with and without peft's
prepare_model_for_kbit_training, then get_peft_model; the points of
tests/tgauge/test_finetune_kbit.py, measured by `tgauge validate`'s rows.

Run from the repository root: `PYTHONPATH=. python scripts/qlora_table.py`; with
`--checkpointing`, the points of issue 20c (CHECKPOINTED: LoRA and QLoRA under transformers'
gradient checkpointing; under kbit-prep's reentrant checkpoint the profiler counts the layers'
inner backward under the loss, so only the FLOP totals are compared).
"""

from __future__ import annotations

import sys

from tests.tgauge.test_finetune_kbit import CHECKPOINTED, EXACT, POINTS, _validate, _work


def _pair(pred: int, meas: int) -> str:
    return f"{pred:,} / {meas:,} ({(pred - meas) / meas:+.2%})"


def main() -> None:
    checkpointed = "--checkpointing" in sys.argv
    rows_named = "params, weights, grads, states, FLOPs" + (
        " (kbit-prep: totals)" if checkpointed else ""
    )
    print(f"| model | dtype | b | s | fine-tuning | {rows_named} "
          "| saved activations pred / meas (err) | peak pred / meas (err) "
          "| phase pred / meas |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for case in CHECKPOINTED if checkpointed else POINTS:
        family, b, s, fields = getattr(case, "values", case)
        w = _work(b, s, **fields)
        point, rows = _validate(family, w)
        per_module = not (checkpointed and w.kbit_prep)  # reentrant: FLOP totals only
        states = [
            t
            for t in rows
            if t.startswith(EXACT)
            and (per_module or not t.startswith("flops.") or t.endswith(".total"))
        ]
        off = sum(rows[t].predicted != rows[t].measured for t in states)
        act, peak = rows["memory.activations.total"], rows["peak_memory"]
        how = f"{w.quant_type}{' dq' if w.double_quant else ''} r={w.lora_rank} "
        how = f"LoRA r={w.lora_rank} " if w.finetune == "lora" else how
        how += ",".join(w.lora_targets or ("default",))
        how += " kbit-prep" if w.kbit_prep else ""
        how += " ckpt" if w.checkpointing == "full" else ""
        print(f"| {family} | {w.dtype} | {b} | {s} | {how} | "
              f"{len(states)} rows {'exact' if not off else f'{off} OFF'} | "
              f"{_pair(act.predicted, act.measured)} | {_pair(peak.predicted, peak.measured)} | "
              f"{point.peak_phase_predicted} / {point.peak_phase_measured} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
