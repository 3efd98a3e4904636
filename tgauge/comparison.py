"""The records of a validation and the comparison that fills them: a ``Row`` per term
(predicted vs measured, and its verdict under the tolerance of its quantity, ``TOLERANCES``), a
``Point`` per validated (model, workload), one JSON line of validation.jsonl, and the helpers
that turn predicted and measured terms into rows (``make_row``, ``compare``, ``state_rows``,
``train_peak_row``). Shared by the reference model's validation (tgauge/validate.py) and the
Hugging Face one (tgauge/validate_hf.py); no torch here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from estimator.spec import Workload
from tgauge import __version__

Verdict = Literal["exact", "within", "off", "not measured"]
Status = Literal["ok", "did_not_fit", "error"]

#: relative tolerance per quantity (the first component of a row's term); 0 means exact.
TOLERANCES: dict[str, float] = {
    "params": 0.0,
    "memory.weights": 0.0,
    "memory.gradients": 0.0,
    "memory.optimizer": 0.0,
    "memory.activations": 0.01,
    "kv_cache": 0.0,
    "flops": 0.0,
    "peak_memory": 0.02,
}


class Row(BaseModel):
    """One term: predicted vs measured, and the verdict under its quantity's tolerance."""

    model_config = ConfigDict(frozen=True)

    term: str
    unit: Literal["params", "bytes", "flops"]
    predicted: int
    measured: int | None
    abs_error: int | None
    rel_error: float | None
    tolerance: float
    verdict: Verdict
    note: str = ""


class Point(BaseModel):
    """A validated (model, workload): one JSON line of validation.jsonl. ``run_id`` tells
    apart the runs appending to one file; ``tgauge_version`` the code that measured it."""

    model: str
    device: str
    workload: dict[str, Any]
    status: Status
    implementation: Literal["reference", "hf"] = "reference"  # the code measured
    run_id: str = ""
    tgauge_version: str = __version__
    predicted_fits: bool | None = None
    peak_phase_predicted: str | None = None
    peak_phase_measured: str | None = None
    rows: list[Row] = []
    notes: list[str] = []

    @property
    def worst(self) -> Verdict:
        order = ("off", "not measured", "within", "exact")
        found = {r.verdict for r in self.rows}
        return next((v for v in order if v in found), "exact")


def tolerance_of(term: str) -> float:
    """The tolerance of the longest quantity prefix of ``term``."""
    keys = [k for k in TOLERANCES if term == k or term.startswith(k + ".")]
    return TOLERANCES[max(keys, key=len)] if keys else 0.0


def make_row(term: str, unit: str, predicted: int, measured: int | None, note: str = "") -> Row:
    tol = tolerance_of(term)
    if measured is None:
        return Row(
            term=term,
            unit=unit,
            predicted=predicted,
            measured=None,
            abs_error=None,
            rel_error=None,
            tolerance=tol,
            verdict="not measured",
            note=note,
        )
    diff = predicted - measured
    rel = abs(diff) / measured if measured else (0.0 if diff == 0 else float("inf"))
    verdict: Verdict = "exact" if diff == 0 else ("within" if rel <= tol else "off")
    return Row(
        term=term,
        unit=unit,
        predicted=predicted,
        measured=measured,
        abs_error=diff,
        rel_error=rel,
        tolerance=tol,
        verdict=verdict,
        note=note,
    )


def compare(
    prefix: str,
    unit: str,
    predicted: dict[str, int],
    measured: dict[str, int] | None,
    *,
    total: bool = True,
    note: str = "",
    unmeasured: frozenset[str] = frozenset(),
) -> list[Row]:
    """Rows for the union of terms (a term missing on one side counts as 0 there), then the
    total. ``measured=None``: nothing measured. Terms in ``unmeasured`` are reported as not
    measured (with ``note``) and left out of the total on both sides."""
    names = sorted(set(predicted) | set(measured or {}))
    rows = []
    for name in names:
        got = None if measured is None or name in unmeasured else measured.get(name, 0)
        rows.append(
            make_row(
                f"{prefix}.{name}",
                unit,
                predicted.get(name, 0),
                got,
                note if name in unmeasured else "",
            )
        )
    if total and len(names) > 1:
        kept = [n for n in names if n not in unmeasured]
        got = None if measured is None else sum(measured.get(n, 0) for n in kept)
        rows.append(
            make_row(
                f"{prefix}.total",
                unit,
                sum(predicted.get(n, 0) for n in kept),
                got,
                "over the measured terms" if unmeasured else "",
            )
        )
    return rows


def state_rows(predicted: dict[str, int], measured: dict[str, int]) -> list[Row]:
    """The gradients row and one row per optimizer state (bytes) of a training step."""
    grads = make_row(
        "memory.gradients", "bytes", predicted.get("gradients", 0), measured["gradients"]
    )
    states = compare(
        "memory.optimizer",
        "bytes",
        memory_split(predicted, "optimizer"),
        memory_split(measured, "optimizer"),
    )
    return [grads, *states]


def memory_split(terms: dict[str, int], group: str) -> dict[str, int]:
    cut = len(group) + 1
    return {k[cut:]: v for k, v in terms.items() if k.startswith(group + ".")}


def train_peak_row(workload: Workload, est: Any, measured: int) -> Row:
    """The training peak; bitsandbytes' CPU step runs inside one custom op, whose
    temporaries (its fp32 working set) the live tracker cannot see: not measured there."""
    if workload.optimizer == "adamw-8bit" and workload.device == "cpu":
        note = (
            "bitsandbytes' CPU step is one custom op: the live tracker sees none of its "
            f"temporaries (it saw {measured:,} B)"
        )
        return make_row("peak_memory", "bytes", est.peak_memory_bytes, None, note)
    return make_row("peak_memory", "bytes", est.peak_memory_bytes, measured)
