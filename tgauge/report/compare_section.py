"""The report section "Transformer vs LSTM at equal parameters" (issue 25): the study notes'
comparison of ELMo (a biLSTM LM, 93.6M parameters) with GPT (GPT-2 small here, 124M; GPT-1
had 117M) and BERT-base (110M), sized by estimator/plan/compare.py: one fp32 AdamW training
step each, against sequence length: the step's peak memory, its FLOPs, the dependent
(sequential) steps and the roofline step time that respects the recurrence.

The chart data are built here as plain values (no matplotlib: tgauge/report/charts.py draws
them), like tgauge/report/chartdata.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tgauge.report.chartdata import ChartData, Series

#: the study notes' comparison: the default models of the section
DEFAULT_MODELS = ("elmo", "gpt2-small", "bert-base")
DEFAULT_SEQ_LENS = (64, 128, 256, 512, 1024, 2048)

_PANELS: tuple[tuple[str, str, str, Callable[[Any], float], bool], ...] = (
    ("compare_memory", "training step peak memory", "bytes", lambda r: r.train_memory_bytes, False),
    ("compare_flops", "training step FLOPs", "FLOPs", lambda r: r.train_flops, False),
    (
        "compare_sequential",
        "sequential (dependent) steps of the forward",
        "steps",
        lambda r: r.sequential_steps,
        True,
    ),
    ("compare_time", "roofline step time", "seconds", lambda r: r.step_time_s, False),
)


def compare_charts(rows: list[Any], gpu: str) -> list[ChartData]:
    """One chart per panel, one line per model (``rows``: estimator.plan.compare.CompareRow)."""
    names = list(dict.fromkeys(r.name for r in rows))
    charts = []
    for name, title, unit, value, log_y in _PANELS:
        series = []
        for model in names:
            mine = sorted((r for r in rows if r.name == model), key=lambda r: r.seq_len)
            label = model if mine[0].family == "transformer" else f"{model} (LSTM)"
            series.append(
                Series(label=label, x=[r.seq_len for r in mine], y=[value(r) for r in mine])
            )
        charts.append(
            ChartData(
                name=name,
                title=f"Transformer vs LSTM: {title}"
                + (f" on {gpu}" if name == "compare_time" else ""),
                x_label="sequence length T (tokens)",
                y_label=unit,
                kind="lines",
                series=series,
                log_x=True,
                log_y=log_y,
            )
        )
    return charts


def compare_section(
    models: list[str], seq_lens: list[int], batch: int = 8, gpu: str = "a100-80gb"
) -> Any:
    """The section: the equal-parameter framing, a table per model and length, four charts."""
    from estimator.plan.compare import compare
    from estimator.plan.hardware import get_gpu
    from estimator.terms.recurrent import UNCHECKED
    from tgauge.format import human_bytes, human_count, human_flops, human_seconds
    from tgauge.report.writers import Section, Table

    result = compare(models, seq_lens, batch, get_gpu(gpu))
    rows = result.rows
    params = {r.name: r.params for r in rows}
    framing = (
        "Equal parameters, as the study notes compare them: ELMo (a 2-layer biLSTM with a "
        "character CNN, 93.6M parameters without its softmax) beside GPT (117M; GPT-2 small "
        "here) and BERT-base (110M). Here: "
        + ", ".join(f"{m} {human_count(n)}" for m, n in params.items())
        + f". One fp32 AdamW training step of b={batch} sequences of T tokens each."
    )
    memory = (
        "Memory is each step's estimated peak of live bytes and its phase; an LSTM language "
        "model's from estimator/replay/recurrent_step.py, checked within 2% against the live "
        "tracker on CPU (tests/recurrent/test_recurrent_peak.py); a recurrent model outside it "
        "is shown as its sum of terms."
    )
    sequential = (
        "Sequential steps: operations that wait for the previous one (Table 1 of Vaswani et al. "
        "2017): T per layer and direction for the LSTM (h_t needs h_(t-1)), 1 per layer for "
        "self-attention. The roofline time runs the LSTM's T dependent steps one after another "
        "(each reads W_hh again), a Transformer layer as one parallel chain of matmuls."
    )
    table = Table(
        columns=[
            "model",
            "T",
            "params",
            "train FLOPs",
            "train memory",
            "state (inference)",
            "sequential steps",
            "step time",
        ],
        rows=[
            [
                r.name if r.family == "transformer" else f"{r.name} (LSTM)",
                str(r.seq_len),
                human_count(r.params),
                human_flops(r.train_flops),
                f"{human_bytes(r.train_memory_bytes)} "
                + (f"peak ({r.peak_phase})" if r.train_memory_kind == "peak" else "sum of terms"),
                f"{human_bytes(r.state_bytes)} "
                + ("KV cache" if r.state_kind == "kv cache" else "h, c"),
                str(r.sequential_steps),
                f"{human_seconds(r.step_time_s)} ({r.bound})",
            ]
            for r in rows
        ],
    )
    paragraphs = [framing, memory, sequential]
    paragraphs += [f"{m} at T={s} left out: {why}." for m, s, why in result.skipped]
    paragraphs += [f"Not checked: {line}." for line in UNCHECKED]
    return Section(
        heading="Transformer vs LSTM at equal parameters",
        paragraphs=paragraphs,
        tables=[table],
        charts=compare_charts(rows, gpu),
    )
