"""The data behind each chart, as plain typed values: built by pure functions, tested directly.

A chart function in ``tgauge.report.charts`` turns one ``ChartData`` into a figure; nothing
here imports matplotlib.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tgauge.report.validation import ValidationRecord

UNIT_LABEL = {"bytes": "bytes", "flops": "FLOPs", "params": "parameters"}


class Series(BaseModel):
    """One labelled line, stacked band or set of points."""

    model_config = ConfigDict(frozen=True)

    label: str
    x: list[float]
    y: list[float]
    style: Literal["line", "points", "area", "dashed"] = "line"


class ChartData(BaseModel):
    """Everything a chart shows; ``name`` is the file stem of the rendered figure."""

    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    x_label: str
    y_label: str
    kind: Literal["stacked", "lines", "parity"]
    series: list[Series]
    log_x: bool = False
    log_y: bool = False


def _varying_field(records: list[ValidationRecord]) -> str | None:
    """The first workload field whose numeric value differs between records."""
    keys = sorted({k for r in records for k in r.workload})
    for key in keys:
        values = {r.workload.get(key) for r in records}
        if len(values) > 1 and all(isinstance(v, (int, float)) for v in values):
            return key
    return None


def _measured_sum(record: ValidationRecord, unit: str) -> tuple[int, int] | None:
    """(predicted, measured) summed over the rows of ``unit`` that were measured."""
    rows = [r for r in record.rows if r.unit == unit and r.measured is not None]
    if not rows:
        return None
    return sum(r.predicted for r in rows), sum(r.measured or 0 for r in rows)


def validation_lines_data(records: list[ValidationRecord], unit: str = "bytes") -> list[ChartData]:
    """Per (model, device): predicted line vs measured points of ``unit`` (summed over the
    measured terms) against the workload field that varies; groups without one are skipped."""
    groups: dict[tuple[str, str], list[ValidationRecord]] = defaultdict(list)
    for r in records:
        if r.status == "ok":
            groups[(r.model, r.device)].append(r)
    charts = []
    for (model, device), group in sorted(groups.items()):
        field = _varying_field(group)
        if field is None:
            continue
        points = sorted(
            (float(r.workload[field]), *sums)
            for r in group
            if (sums := _measured_sum(r, unit)) is not None
        )
        if not points:
            continue
        xs = [p[0] for p in points]
        charts.append(
            ChartData(
                name=f"validation_{unit}_{model}_{device}".replace("/", "_").replace(" ", "_"),
                title=f"{model} on {device}: predicted vs measured {UNIT_LABEL[unit]}",
                x_label=f"{field} (tokens)" if "len" in field else field,
                y_label=UNIT_LABEL[unit],
                kind="lines",
                series=[
                    Series(label="predicted", x=xs, y=[float(p[1]) for p in points]),
                    Series(label="measured", x=xs, y=[float(p[2]) for p in points], style="points"),
                ],
            )
        )
    return charts


def parity_data(records: list[ValidationRecord]) -> ChartData:
    """Predicted (y) vs measured (x) for every measured term, one series per unit."""
    by_unit: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        for row in r.rows:
            if row.measured is not None and row.measured > 0 and row.predicted > 0:
                by_unit[row.unit].append((float(row.measured), float(row.predicted)))
    series = [
        Series(label=UNIT_LABEL[u], x=[p[0] for p in pts], y=[p[1] for p in pts], style="points")
        for u, pts in sorted(by_unit.items())
    ]
    return ChartData(
        name="parity",
        title="Predicted vs measured, every measured term (diagonal = exact)",
        x_label="measured (parameters, bytes or FLOPs)",
        y_label="predicted (same unit)",
        kind="parity",
        series=series,
        log_x=True,
        log_y=True,
    )
