"""The data behind each chart, as plain typed values: built by pure functions, tested directly.

A chart function in ``tgauge.report.charts`` turns one ``ChartData`` into a figure; nothing
here imports matplotlib.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

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
    y_from_zero: bool = False  # a linear y axis that starts at 0, so small gaps look small


def _varying_field(records: list[ValidationRecord]) -> str | None:
    """The first workload field whose numeric value differs between records."""
    keys = sorted({k for r in records for k in r.workload})
    for key in keys:
        values = {r.workload.get(key) for r in records}
        if len(values) > 1 and all(isinstance(v, (int, float)) for v in values):
            return key
    return None


#: the row a predicted-vs-measured chart follows, per unit: the first one every record measured
HEADLINE_TERMS: dict[str, tuple[str, ...]] = {
    "bytes": ("peak_memory", "memory.activations.total", "kv_cache.total"),
    "flops": ("flops.total",),
    "params": ("params.total",),
}


def _headline(records: list[ValidationRecord], unit: str) -> str | None:
    """The first HEADLINE_TERMS[unit] row measured in every record (None: no such row)."""
    for term in HEADLINE_TERMS[unit]:
        if all(any(r.term == term and r.measured is not None for r in rec.rows) for rec in records):
            return term
    return None


def validation_lines_data(records: list[ValidationRecord], unit: str = "bytes") -> list[ChartData]:
    """Per (model, device): the predicted line vs the measured points of one headline row
    (HEADLINE_TERMS: e.g. the training peak) against the workload field that varies; groups
    without a varying field or without a common headline row are skipped."""
    groups: dict[tuple[str, str], list[ValidationRecord]] = defaultdict(list)
    for r in records:
        if r.status == "ok":
            groups[(r.model, r.device)].append(r)
    charts = []
    for (model, device), group in sorted(groups.items()):
        field, term = _varying_field(group), _headline(group, unit)
        if field is None or term is None:
            continue
        rows = {id(rec): next(r for r in rec.rows if r.term == term) for rec in group}
        points = sorted(
            (float(rec.workload[field]), rows[id(rec)].predicted, rows[id(rec)].measured)
            for rec in group
        )
        xs = [p[0] for p in points]
        worst = max((abs(p[1] - p[2]) / p[2] for p in points if p[2]), default=0.0)
        charts.append(
            ChartData(
                name=f"validation_{unit}_{model}_{device}".replace("/", "_").replace(" ", "_"),
                title=f"{model} on {device}: {term}, predicted vs measured "
                f"(largest gap {worst:.2%})",
                x_label=x_label(field),
                y_label=UNIT_LABEL[unit],
                kind="lines",
                y_from_zero=True,
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


# ---- from the estimator ------------------------------------------------------------------
def _is_attention(term: str) -> bool:
    """A term of a self- or cross-attention block (projections, scores, mix, sdpa)."""
    return "self_attn." in term or "cross_attn." in term


def quadratic_part(f: Callable[[int], float], s: int) -> float:
    """The s^2 part a s^2 of f(s) = a s^2 + b s + c, from the second difference over three
    equally spaced lengths s, s - h, s - 2h (h = s // 4): f(s) - 2 f(s - h) + f(s - 2h) =
    2 a h^2, so linear and constant parts cancel exactly. Terms that grow linearly (Q, K, V,
    fused attention's saved tensors) contribute 0; under a window or chunk of width w the
    scores grow linearly past w and so does this curve. s < 4: forward points s, s+1, s+2."""
    h = s // 4
    points = (s, s - h, s - 2 * h) if h else (s + 2, s + 1, s)
    h = h or 1
    second = f(points[0]) - 2 * f(points[1]) + f(points[2])
    return max(second / (2 * h * h) * s * s, 0.0)


#: one x-axis label per workload field, shared by the estimator's and the validation's charts
X_LABELS = {
    "seq_len": "sequence length s (tokens)",
    "batch_size": "batch size b (sequences)",
    "prompt_len": "prompt length (tokens)",
    "target_len": "target length (tokens)",
    "new_tokens": "new tokens (decode steps)",
}


def x_label(field: str) -> str:
    return X_LABELS.get(field, field)


def _part(name: str) -> str:
    """The stack's category of a part live at the peak (estimator/replay/composition.py)."""
    from estimator.replay.composition import REMAINDER, STEP_TEMPORARIES

    if name.startswith(STEP_TEMPORARIES):
        return STEP_TEMPORARIES
    if name in REMAINDER.values() or name.startswith("other"):
        return "activations and transients (replayed)"
    if name.startswith("inputs"):
        return "inputs"
    return name.split(".")[0]


def memory_breakdown_data(spec: object, workload: object, seq_lens: list[int]) -> ChartData:
    """What is live at the peak (estimator/replay/composition.py), grouped and stacked, one x
    per sequence length: the top of the stack is the peak, the optimizer step's temporaries
    included where they make it."""
    from estimator.estimate import estimate
    from estimator.replay.composition import peak_parts
    from estimator.shapes import resolve

    rows = []
    for s in seq_lens:
        est = estimate(spec, workload.replace(seq_len=s))  # type: ignore[attr-defined]
        sh = resolve(spec, est.workload)  # type: ignore[arg-type]
        m, p = est.memory.terms, est.peak_memory_bytes
        rows.append(peak_parts(spec, sh, m, p, est.peak_phase))  # type: ignore[arg-type]
    cats: dict[str, list[float]] = {}
    for i, parts in enumerate(rows):
        for name, value in parts.items():
            cats.setdefault(_part(name), [0.0] * len(rows))[i] += value
    return ChartData(
        name=f"memory_by_term_{spec.name}",  # type: ignore[attr-defined]
        title=f"{spec.name}: memory live at the peak, {_short(workload)}",  # type: ignore[attr-defined]
        x_label=x_label("seq_len"),
        y_label="bytes",
        kind="stacked",
        log_x=True,
        series=[
            Series(label=c, x=[float(s) for s in seq_lens], y=v, style="area")
            for c, v in cats.items()
        ],
    )


def _short(workload: Any) -> str:
    """'train, b=1, fp32, eager attention, cpu, forloop step' for chart titles (s is the x)."""
    w = workload
    dtype = w.dtype + (" + fp32 master" if w.master_weights else "")
    if w.autocast:
        dtype = f"fp32 + autocast {w.autocast}"
    elif w.mode == "train" and w.dtype in ("fp16", "bf16") and not w.master_weights:
        dtype = f"pure {w.dtype}"
    text = f"{w.mode}, b={w.batch_size}, {dtype}, {w.attention_impl} attention, {w.device}"
    if w.mode == "train" and w.optimizer != "none":
        from estimator.spec.workload import resolved_optimizer_impl

        text += f", {resolved_optimizer_impl(w)} step"
    return text


def scaling_data(spec: object, workload: object, seq_lens: list[int]) -> list[ChartData]:
    """FLOPs and peak memory vs sequence length, with the quadratic attention part apart
    (``quadratic_part`` of the attention terms: what truly grows with s x s)."""
    from estimator.estimate import estimate

    cache: dict[int, Any] = {}

    def est(s: int) -> Any:
        if s not in cache:
            cache[s] = estimate(spec, workload.replace(seq_len=s))  # type: ignore[attr-defined]
        return cache[s]

    def attention(kind: str) -> Callable[[int], float]:
        def f(s: int) -> float:
            terms = getattr(est(s), kind).terms
            keep = (
                k
                for k in terms
                if _is_attention(k) and (kind == "flops" or k.startswith("activations."))
            )
            return float(sum(terms[k] for k in keep))

        return f

    xs = [float(s) for s in seq_lens]
    flops = ChartData(
        name=f"flops_vs_seq_{spec.name}",
        title=f"{spec.name}: FLOPs per step vs sequence length, {_short(workload)}",  # type: ignore[attr-defined]
        x_label=x_label("seq_len"),
        y_label="FLOPs",
        kind="lines",
        log_x=True,
        series=[
            Series(label="total", x=xs, y=[float(est(s).flops.total) for s in seq_lens]),
            Series(
                label="attention s x s part (quadratic)",
                x=xs,
                y=[quadratic_part(attention("flops"), s) for s in seq_lens],
                style="dashed",
            ),
        ],
    )
    memory = ChartData(
        name=f"memory_vs_seq_{spec.name}",
        title=f"{spec.name}: peak memory vs sequence length, {_short(workload)}",  # type: ignore[attr-defined]
        x_label=x_label("seq_len"),
        y_label="bytes",
        kind="lines",
        log_x=True,
        series=[
            Series(label="peak", x=xs, y=[float(est(s).peak_memory_bytes) for s in seq_lens]),
            Series(
                label="attention s x s activations (quadratic)",
                x=xs,
                y=[quadratic_part(attention("memory"), s) for s in seq_lens],
                style="dashed",
            ),
        ],
    )
    return [flops, memory]


def kv_growth_data(spec: object, workload: object) -> ChartData:
    """KV cache bytes after each decode step t = 0 (prefill) .. new_tokens."""
    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_growth_bytes

    steps = list(range(workload.new_tokens + 1))  # type: ignore[attr-defined]
    growth = kv_cache_growth_bytes(spec, resolve(spec, workload))  # type: ignore[arg-type]
    return ChartData(
        name=f"kv_cache_growth_{spec.name}",
        title=f"{spec.name}: KV cache over decode steps",  # type: ignore[attr-defined]
        x_label="decode step (tokens generated)",
        y_label="bytes",
        kind="lines",
        series=[
            Series(
                label="KV cache",
                x=[float(t) for t in steps],
                y=[float(v) for v in growth],
            )
        ],
    )  # type: ignore[arg-type]


def decode_cost_data(spec: object, workload: object) -> ChartData:
    """Cumulative decode FLOPs (prefill included) with vs without a KV cache."""
    from estimator.estimate import estimate

    dec = estimate(spec, workload).decode  # type: ignore[arg-type]
    xs = [float(t) for t in range(len(dec.per_step_flops) + 1)]

    def cumulative(per_step: list[int]) -> list[float]:
        out, acc = [], dec.prefill_flops
        out.append(float(acc))
        for f in per_step:
            acc += f
            out.append(float(acc))
        return out

    return ChartData(
        name=f"decode_cost_{spec.name}",
        title=f"{spec.name}: decode FLOPs, with vs without cache",  # type: ignore[attr-defined]
        x_label="decode step (tokens generated)",
        y_label="FLOPs (cumulative)",
        kind="lines",
        series=[
            Series(label="with KV cache", x=xs, y=cumulative(dec.per_step_flops)),
            Series(
                label="without KV cache",
                x=xs,
                y=cumulative(dec.per_step_flops_without_cache),
                style="dashed",
            ),
        ],
    )
