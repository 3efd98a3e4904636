"""The peak as a table of what is live at its moment (estimator/replay/composition.py): the
rows add up to the peak, for `estimate`, `fit` and the report alike."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from tgauge.format import human_bytes


def peak_rows(
    spec: Any,
    workload: Any,
    terms: dict[str, int],
    peak: int,
    phase: str,
    named: dict[str, int] | None = None,
) -> Any:
    """[(part, bytes)] live at the peak, largest first; they sum to ``peak``. ``named``: a
    rank's labelled parts of the moment (Estimate.peak_parts)."""
    from estimator.replay.composition import peak_parts
    from estimator.shapes import resolve

    parts = peak_parts(spec, resolve(spec, workload), terms, peak, phase, named)
    return sorted(parts.items(), key=lambda kv: -kv[1])


def peak_table(
    spec: Any,
    workload: Any,
    terms: dict[str, int],
    peak: int,
    phase: str,
    title: str,
    named: dict[str, int] | None = None,
) -> Table:
    """``title`` at the peak (phase): each part live then, with bytes, size and share
    (``named``: a rank's labelled parts, ``peak_rows``)."""
    t = Table(title=f"{title} at the peak ({phase}): what is live then")
    t.caption = "the parts add up to the peak (the memory-by-term table lists every term)"
    for col in ("part", "bytes", "size", "share"):
        t.add_column(col, justify="left" if col == "part" else "right")
    for name, value in peak_rows(spec, workload, terms, peak, phase, named):
        t.add_row(escape(name), f"{value:,}", human_bytes(value), f"{100 * value / peak:.1f}%")
    t.add_row("[bold]peak[/]", f"{peak:,}", human_bytes(peak), "100.0%")
    return t
