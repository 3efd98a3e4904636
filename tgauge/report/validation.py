"""Read a validation file (JSON lines written by `tgauge validate --out DIR`).

One object per measured point::

    {"model": str, "device": str, "workload": {Workload fields},
     "status": "ok" | "did_not_fit" | "error", "predicted_fits": bool | null,
     "rows": [{"term": str, "unit": "params" | "bytes" | "flops", "predicted": int,
               "measured": int | null, "rel_error": float | null,
               "verdict": "exact" | "within" | "off" | "not measured"}]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from estimator.spec import SpecError


class ValidationRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    term: str
    unit: Literal["params", "bytes", "flops"]
    predicted: int
    measured: int | None = None
    rel_error: float | None = None
    verdict: Literal["exact", "within", "off", "not measured"] = "not measured"


class ValidationRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    device: str
    workload: dict[str, Any]
    status: Literal["ok", "did_not_fit", "error"]
    predicted_fits: bool | None = None
    rows: list[ValidationRow] = []


def load_validation(path: str | Path) -> list[ValidationRecord]:
    """Every record of a JSON-lines validation file; SpecError naming the bad line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SpecError(f"cannot read validation file {path}: {exc.strerror}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(ValidationRecord.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise SpecError(f"{path}:{number} is not a validation record: {first}") from None
    return records
