"""Figures from ChartData (matplotlib, Agg backend, imported inside the functions).

Each public chart function takes its data and returns a matplotlib Figure; ``render`` writes
SVG and PNG. Axes that carry bytes are labelled in GiB/MiB (powers of 2), FLOPs in TFLOP or
GFLOP, so the chart reads at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tgauge.report.chartdata import ChartData

_SCALES = {
    "bytes": [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "bytes")],
    "FLOPs": [(1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1, "FLOP")],
}


def _scale(label: str, values: list[float]) -> tuple[float, str]:
    """(divisor, unit) so the largest value reads as a small number; label keeps its unit."""
    for key, steps in _SCALES.items():
        if label.startswith(key) or label.endswith(key):
            top = max((abs(v) for v in values), default=1.0)
            for div, name in steps:
                if top >= div:
                    return div, name
            return steps[-1]
    return 1.0, ""


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
    return fig, ax


def _finish(fig: Any, ax: Any, data: ChartData, y_unit: str, x_unit: str = "") -> Any:
    ax.set_title(data.title, fontsize=11)
    ax.set_xlabel(data.x_label + (f" [{x_unit}]" if x_unit else ""))
    ax.set_ylabel(data.y_label + (f" [{y_unit}]" if y_unit else ""))
    if data.log_x:
        ax.set_xscale("log", base=2 if data.kind != "parity" else 10)
    if data.log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if data.series:
        ax.legend(fontsize=9)
    return fig


def stacked_figure(data: ChartData) -> Any:
    """Stacked areas (e.g. memory by term across sequence lengths)."""
    fig, ax = _figure()
    div, unit = _scale(
        data.y_label, [sum(v) for v in zip(*(s.y for s in data.series), strict=True)]
    )
    if data.series:
        ax.stackplot(
            data.series[0].x,
            *[[v / div for v in s.y] for s in data.series],
            labels=[s.label for s in data.series],
            alpha=0.85,
        )
    return _finish(fig, ax, data, unit)


def lines_figure(data: ChartData) -> Any:
    """Lines and measured points on one axis."""
    fig, ax = _figure()
    div, unit = _scale(data.y_label, [v for s in data.series for v in s.y])
    for s in data.series:
        y = [v / div for v in s.y]
        if s.style == "points":
            ax.plot(s.x, y, "o", label=s.label, markersize=6)
        elif s.style == "area":
            ax.fill_between(s.x, y, alpha=0.3, label=s.label)
        else:
            ax.plot(s.x, y, "--" if s.style == "dashed" else "-", label=s.label, linewidth=2)
    if data.y_from_zero:  # from 0 with a margin above the largest value
        top = max((v / div for s in data.series for v in s.y), default=1.0)
        ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)
    return _finish(fig, ax, data, unit)


def parity_figure(data: ChartData) -> Any:
    """Predicted vs measured on log-log axes with the y = x diagonal."""
    fig, ax = _figure()
    values = [v for s in data.series for v in (*s.x, *s.y)]
    for s in data.series:
        ax.plot(s.x, s.y, "o", label=s.label, markersize=5, alpha=0.8)
    if values:
        lo, hi = min(values), max(values)
        ax.plot([lo, hi], [lo, hi], "k-", linewidth=1, label="exact (y = x)")
    return _finish(fig, ax, data, "")


FIGURES = {"stacked": stacked_figure, "lines": lines_figure, "parity": parity_figure}


def figure(data: ChartData) -> Any:
    """The figure for ``data`` by its kind."""
    return FIGURES[data.kind](data)


def render(data: ChartData, out_dir: Path) -> dict[str, Path]:
    """Write ``name.svg`` and ``name.png`` under ``out_dir``; returns both paths."""
    import matplotlib.pyplot as plt

    fig = figure(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{data.name}.{ext}" for ext in ("svg", "png")}
    fig.savefig(paths["svg"])
    fig.savefig(paths["png"], dpi=110)
    plt.close(fig)
    return paths
