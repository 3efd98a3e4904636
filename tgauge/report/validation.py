"""Read a validation file (JSON lines written by `tgauge validate --out DIR`).

One object per measured point::

    {"model": str, "device": str, "workload": {Workload fields},
     "status": "ok" | "did_not_fit" | "error", "implementation": "reference" | "hf",
     "predicted_fits": bool | null,
     "rows": [{"term": str, "unit": "params" | "bytes" | "flops", "predicted": int,
               "measured": int | null, "rel_error": float | null,
               "verdict": "exact" | "within" | "off" | "not measured"}],
     "superseded": true (only when a newer record of the same point follows)}

Reading goes on past damage (issue 24): a line that is not a whole record (torn by a kill, two
records glued by a crashed writer, binary garbage) is skipped with a note naming its line
number. A point measured more than once keeps one record, ``current``: the newest whole record
of the reading tgauge version, else the newest of any version; the others are superseded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

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
    workload: dict[
        str, int | float | str | bool | list[str] | None
    ]  # Workload fields (issue 20: frozen, lora_targets lists)
    status: Literal["ok", "did_not_fit", "error"]
    implementation: Literal["reference", "hf"] = "reference"  # files before issue 9: reference
    run_id: str = ""
    tgauge_version: str = ""
    predicted_fits: bool | None = None
    rows: list[ValidationRow] = []
    # issue 24: a newer record of the same point follows (kept in the file, left out of reports)
    superseded: bool = False

    def point_key(self) -> tuple[str, str, str, str]:
        """What makes two records the same point: model, implementation, device, workload."""
        import json

        workload = json.dumps(self.workload, sort_keys=True)
        return self.model, self.implementation, self.device, workload


class Numbered(NamedTuple):
    """A whole record and its line number in the file (1-based)."""

    line: int
    record: ValidationRecord


MAX_LISTED = 10  # line numbers a note lists before "..."


def _listed(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:MAX_LISTED]))
    return shown + (", ..." if len(numbers) > MAX_LISTED else "")


def read_records(path: str | Path, notes: list[str] | None = None) -> list[Numbered]:
    """Every whole record of a JSON-lines validation file, with its line number.

    A line that is not a whole record is skipped and said so in ``notes``: a last line without
    its newline is what a run killed mid-write (or a full disk) leaves; one in the middle is
    damage (a torn line, two records glued, bytes that are not UTF-8 text). SpecError when no
    line is a record but some line is damaged (not a validation file at all)."""
    from estimator.spec.files import MAX_DATA_BYTES, parse_json, read_bytes

    try:
        data = read_bytes(path, MAX_DATA_BYTES)
    except SpecError as exc:
        raise SpecError(f"validation file: {exc}") from None
    lines = data.split(b"\n")
    records: list[Numbered] = []
    damaged: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            records.append(Numbered(number, ValidationRecord.model_validate(parse_json(line, ""))))
        except (UnicodeDecodeError, SpecError, ValidationError) as exc:
            if number == len(lines):  # no newline after it: cut off mid-write
                if notes is not None:
                    notes.append(
                        f"{path}:{number}: skipped a partial last line ({len(raw):,} bytes) "
                        "left by an interrupted run"
                    )
                continue
            why = (
                "bytes that are not UTF-8 text"
                if isinstance(exc, UnicodeDecodeError)
                else str(exc).splitlines()[0].strip(": ")
            )
            damaged.append((number, why))
    if damaged and not records:
        number, why = damaged[0]
        raise SpecError(f"{path}:{number} is not a validation record: {why}")
    if damaged and notes is not None:
        for number, why in damaged[:MAX_LISTED]:
            notes.append(f"{path}:{number}: skipped a damaged line (not a whole record: {why})")
        if len(damaged) > MAX_LISTED:
            notes.append(f"{path}: skipped {len(damaged) - MAX_LISTED} more damaged lines")
    return records


def current(
    records: list[Numbered], version: str | None = None
) -> tuple[list[Numbered], list[int]]:
    """One record per point: the newest whole record written by tgauge ``version`` (default:
    this one), else the newest of any version. Returns the kept records (in file order) and
    the line numbers of the superseded ones."""
    if version is None:
        from tgauge import __version__ as version
    winner: dict[tuple[str, str, str, str], Numbered] = {}
    for item in records:  # file order: a later record is newer
        key = item.record.point_key()
        best = winner.get(key)
        if (
            best is None
            or item.record.tgauge_version == version
            or (best.record.tgauge_version != version)
        ):
            winner[key] = item
    kept_lines = {item.line for item in winner.values()}
    kept = [item for item in records if item.line in kept_lines]
    superseded = [item.line for item in records if item.line not in kept_lines]
    return kept, superseded


def load_validation(path: str | Path, notes: list[str] | None = None) -> list[ValidationRecord]:
    """The current record of every point of a JSON-lines validation file (``current``);
    damaged lines and superseded records are skipped and said so in ``notes``."""
    kept, superseded = current(read_records(path, notes))
    if superseded and notes is not None:
        notes.append(
            f"{path}: skipped {len(superseded)} superseded record"
            f"{'s' if len(superseded) > 1 else ''} (lines {_listed(superseded)}): a newer "
            "record of the same point follows"
        )
    return [item.record for item in kept]


def mark_superseded(path: Path, superseded: list[int]) -> int:
    """Add ``"superseded": true`` to those lines of ``path`` that lack it, rewriting the file
    in one rename (tgauge/safeio.py write_files); every other line is kept byte for byte.
    Returns how many lines were marked. Call it holding the folder (safeio.hold_folder)."""
    import json

    from tgauge.safeio import write_files

    wanted = set(superseded)
    if not wanted:
        return 0
    lines = path.read_bytes().split(b"\n")
    marked = 0
    for i in range(len(lines)):
        if i + 1 in wanted:
            doc = json.loads(lines[i])
            if doc.get("superseded") is not True:
                doc["superseded"] = True
                lines[i] = json.dumps(doc, separators=(",", ":")).encode()
                marked += 1
    if marked:
        write_files({path: b"\n".join(lines)})
    return marked
