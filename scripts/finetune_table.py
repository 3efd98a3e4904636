"""The LoRA table of docs/validation.md: peft's get_peft_model on the tiny HF GPT-2 and Llama,
CPU, fp32 and autocast bf16, the fixed points of tests/tgauge/test_finetune_bars.py.

Run from the repository root: `PYTHONPATH=. python scripts/finetune_table.py`
"""

from __future__ import annotations

from estimator.shapes import resolve
from estimator.terms.finetune import trainable_params
from tests.tgauge.test_finetune_bars import FIXED, measure


def _pair(pred: int, meas: int) -> str:
    return f"{pred:,} / {meas:,} ({(pred - meas) / meas:+.2%})"


def main() -> None:
    print("| model | precision | b | s | LoRA | trainable, grads, states | saved activations "
          "pred / meas (err) | peak pred / meas (err) | phase pred / meas |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for case in FIXED:
        family, autocast, b, s, fields = getattr(case, "values", case)
        spec, w, est, model, prof = measure(family, autocast, b, s, fields)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        opt = {f"optimizer.{k}": v for k, v in prof.optimizer.terms.items()}
        exact = (n == sum(trainable_params(spec, resolve(spec, w)).values())
                 and prof.gradients.total == est.memory.terms["gradients"] and opt == {
            k: v for k, v in est.memory.terms.items() if k.startswith("optimizer.")})  # fmt: skip
        saved = sum(v for k, v in est.memory.terms.items() if k.startswith("activations."))
        lora = f"r={w.lora_rank} {','.join(w.lora_targets or ('default',))}"
        lora += f" dropout {w.lora_dropout}" if w.lora_dropout else ""
        print(f"| {family} | {'autocast bf16' if autocast else 'fp32'} | {b} | {s} | {lora} | "
              f"{n:,} {'exact' if exact else 'OFF'} | "
              f"{_pair(saved, prof.saved.activations.total)} | "
              f"{_pair(est.peak_memory_bytes, prof.live_peak.peak_bytes)} | "
              f"{est.peak_phase} / {prof.live_peak.phase} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
