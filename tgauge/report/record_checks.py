"""Checks on validation records once read (issue 23), before a report draws them.

tgauge/report/validation.py reads the lines (and what an interrupted run left); this module
judges what was read: a record with a negative predicted or measured number, or a workload
whose fields are not of the Workload's types, is skipped with a note naming it; records of
two different models under one name (their predicted parameter counts differ) are refused,
since the report would draw them as one line.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from estimator.spec import SpecError, Workload


def _where(number: int, record: Any) -> str:
    w = record.workload
    b, s = w.get("batch_size"), w.get("seq_len")
    return f"point {number} ({record.model} {w.get('mode')} b={b} s={s})"


def _negative(record: Any) -> str | None:
    """The first row with a negative predicted or measured number, as text."""
    for row in record.rows:
        for what in ("predicted", "measured"):
            value = getattr(row, what)
            if value is not None and value < 0:
                return f"{row.term} {what} {value:,} {row.unit} (negative)"
    return None


def _wrong_types(record: Any) -> str | None:
    """Why the record's workload is not a Workload's fields (strict types: 32, not "32"),
    else None. Fields this version does not know are left aside (a record of another
    version), not judged."""
    from pydantic import ValidationError

    known = {k: v for k, v in record.workload.items() if k in Workload.model_fields}
    try:
        Workload.model_validate(known, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        return f"workload {field}={err.get('input')!r}: {err['msg']}"
    except SpecError as exc:  # a cross-field check of Workload
        return f"workload: {exc}"
    return None


def _param_total(record: Any) -> int | None:
    rows = [r.predicted for r in record.rows if r.unit == "params"]
    return sum(rows) if rows else None


def check_records(records: list[Any], path: Any, notes: list[str]) -> list[Any]:
    """The records a report may draw: the bad ones left out with a note each (``notes``);
    SpecError when one name holds two models."""
    kept = []
    for number, record in enumerate(records, start=1):
        why = _negative(record) or _wrong_types(record)
        if why:
            notes.append(f"{path}: skipped {_where(number, record)}: {why}")
            continue
        kept.append((number, record))
    totals: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for number, record in kept:
        total = _param_total(record)
        if total is not None:
            totals[(record.model, record.implementation)].setdefault(total, number)
    for (model, impl), seen in totals.items():
        if len(seen) > 1:
            (a, first), (b, second) = list(seen.items())[:2]
            raise SpecError(
                f"{path} holds two different models named {model!r} ({impl}): "
                f"{a:,} parameters at point {first}, {b:,} at point {second}; write each "
                "model's validation to its own --out folder"
            )
    return [record for _, record in kept]
