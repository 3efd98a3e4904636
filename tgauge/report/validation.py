"""Read a validation file (JSON lines written by `tgauge validate --out DIR`).

One object per measured point::

    {"model": str, "device": str, "workload": {Workload fields},
     "status": "ok" | "did_not_fit" | "error", "implementation": "reference" | "hf",
     "predicted_fits": bool | null,
     "rows": [{"term": str, "unit": "params" | "bytes" | "flops", "predicted": int,
               "measured": int | null, "rel_error": float | null,
               "verdict": "exact" | "within" | "off" | "not measured"}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    workload: dict[str, int | float | str | bool | None]  # Workload fields: scalars only
    status: Literal["ok", "did_not_fit", "error"]
    implementation: Literal["reference", "hf"] = "reference"  # files before issue 9: reference
    run_id: str = ""
    tgauge_version: str = ""
    predicted_fits: bool | None = None
    rows: list[ValidationRow] = []


def load_validation(path: str | Path, notes: list[str] | None = None) -> list[ValidationRecord]:
    """Every record of a JSON-lines validation file; SpecError naming the bad line.

    A last line without its newline that is not a whole record is what a run killed mid-write
    (or a full disk) leaves: it is skipped, and said so in ``notes`` when a list is given."""
    from estimator.spec.files import MAX_DATA_BYTES, parse_json, read_text

    try:
        text = read_text(path, MAX_DATA_BYTES)
    except SpecError as exc:
        raise SpecError(f"validation file: {exc}") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(ValidationRecord.model_validate(parse_json(line, "the line")))
        except (SpecError, ValidationError) as exc:
            if number == len(lines):  # no newline after it: cut off mid-write
                if notes is not None:
                    notes.append(
                        f"{path}:{number}: skipped a partial last line ({len(line):,} characters) "
                        "left by an interrupted run"
                    )
                continue
            first = str(exc).splitlines()[0]
            raise SpecError(f"{path}:{number} is not a validation record: {first}") from None
    return records
