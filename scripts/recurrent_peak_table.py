"""The recurrent training peak, predicted (estimator/replay/recurrent_step.py) vs measured by
the live tracker (profiler.run's tracked step) on the reference model, CPU, oneDNN off: the
two sizes of tgauge/validate_recurrent.py at b = 1 and 8, T = 32, as a Markdown
table for docs/validation.md.

    python scripts/recurrent_peak_table.py
"""

from __future__ import annotations

from estimator.replay.recurrent_step import recurrent_train_peak
from tgauge.validate_recurrent import ELMO_SMALL, LM_HEAD, measured_recurrent_peak


def main() -> None:
    print("| model | b | T | predicted (B) | phase | measured (B) | phase | error |")
    print("|---|---|---|---|---|---|---|---|")
    for name, spec in (("elmo-small", ELMO_SMALL), ("lm-head", LM_HEAD)):
        for b in (1, 8):
            est = recurrent_train_peak(spec, b, 32)
            measured, phase = measured_recurrent_peak(spec, b, 32)
            err = (est.peak_bytes - measured) / measured
            print(
                f"| {name} | {b} | 32 | {est.peak_bytes:,} | {est.phase} | {measured:,} | "
                f"{phase} | {err:+.2%} |"
            )


if __name__ == "__main__":
    main()
