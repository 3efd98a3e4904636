"""Report: chart data built from the inputs, files written, every chart in the HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from estimator.spec import SpecError
from tgauge.report.chartdata import parity_data, validation_lines_data, x_label
from tgauge.report.validation import load_validation

FIXTURE = Path(__file__).parent / "data" / "validation.jsonl"


def test_validation_fixture_loads_every_record() -> None:
    records = load_validation(FIXTURE)
    assert [r.status for r in records] == ["ok", "ok", "ok", "did_not_fit", "error"]
    assert records[0].rows[1].measured is None


def test_bad_validation_line_names_the_line(tmp_path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text('{"model": "x"}\n')
    with pytest.raises(SpecError, match=r"v\.jsonl:1"):
        load_validation(path)


def test_validation_lines_sum_measured_rows_against_the_varying_field() -> None:
    # fixture: weights predicted 1000/2000/4000 vs measured 1100/2050/4000 at s=128/256/512;
    # the unmeasured activations row is left out of both sums; did_not_fit records are skipped
    (chart,) = validation_lines_data(load_validation(FIXTURE), unit="bytes")
    predicted, measured = chart.series
    assert predicted.x == [128, 256, 512] and measured.x == [128, 256, 512]
    assert predicted.y == [1000, 2000, 4000]
    assert measured.y == [1100, 2050, 4000] and measured.style == "points"
    assert chart.x_label == x_label("seq_len")  # the label the estimator's charts use too


def test_parity_data_has_one_point_per_measured_row_by_unit() -> None:
    data = parity_data(load_validation(FIXTURE))
    by_label = {s.label: s for s in data.series}
    # 3 ok records x (peak bytes, total flops, embed params) measured rows
    assert {k: len(s.x) for k, s in by_label.items()} == {"bytes": 3, "FLOPs": 3, "parameters": 3}
    assert by_label["FLOPs"].x == by_label["FLOPs"].y  # exact rows sit on the diagonal
    assert by_label["bytes"].x == [1100, 2050, 4000] and by_label["bytes"].y == [1000, 2000, 4000]


def test_report_writes_markdown_and_html_holding_every_chart(tmp_path) -> None:
    import re

    from typer.testing import CliRunner

    from tgauge.cli import app

    res = CliRunner().invoke(
        app,
        [
            "report",
            "--model",
            "gpt2-small",
            "--mode",
            "decode",
            "--prompt-len",
            "64",
            "--new-tokens",
            "8",
            "--seq-lens",
            "64..256",
            "--validation",
            str(FIXTURE),
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    charts = sorted((tmp_path / "charts").glob("*.svg"))
    # memory by term, FLOPs and memory vs s, KV growth, decode cost, parity, bytes + FLOPs lines
    assert len(charts) == 8 and len(list((tmp_path / "charts").glob("*.png"))) == 8
    assert page.count("<svg") == len(charts)
    assert "| train b=2 s=128 optimizer adamw (forloop step) |" in md  # summarised, not JSON
    for svg in charts:
        assert f"charts/{svg.name}" in md
        assert f'id="chart-{re.sub(r"[^A-Za-z0-9_-]", "_", svg.stem)}"' in page


def test_kv_growth_and_decode_cost_data_come_from_the_estimator() -> None:
    from estimator.estimate import estimate
    from estimator.shapes import resolve
    from estimator.spec import Workload
    from estimator.spec.presets import get_preset
    from estimator.terms.kv_cache import kv_cache_at
    from tgauge.report.chartdata import decode_cost_data, kv_growth_data

    spec = get_preset("gpt2-small")
    wl = Workload(mode="decode", prompt_len=10, new_tokens=3)
    kv = kv_growth_data(spec, wl).series[0]
    assert kv.x == [0, 1, 2, 3] and kv.y == [
        sum(kv_cache_at(spec, resolve(spec, wl), t).values()) for t in range(4)
    ]
    dec = estimate(spec, wl).decode
    with_cache, without = decode_cost_data(spec, wl).series
    assert with_cache.y[-1] == dec.total_with_cache_flops
    assert without.y[-1] == dec.total_without_cache_flops


def test_memory_breakdown_stacks_sum_to_the_peak() -> None:
    from estimator.estimate import estimate
    from estimator.spec import Workload
    from estimator.spec.presets import get_preset
    from tgauge.report.chartdata import memory_breakdown_data

    spec, wl = get_preset("gpt2-small"), Workload(mode="train", attention_impl="eager")
    data = memory_breakdown_data(spec, wl, [128, 256])
    for i, s in enumerate([128, 256]):
        peak = estimate(spec, wl.model_copy(update={"seq_len": s})).peak_memory_bytes
        assert sum(series.y[i] for series in data.series) == peak  # issue 23: what is live then
    assert "weights" in [s.label for s in data.series]


def test_validation_lines_start_at_zero_and_state_the_largest_gap() -> None:
    # fixture gaps: |1000 - 1100| / 1100 = 9.09%, 50 / 2050 = 2.44%, 0
    (chart,) = validation_lines_data(load_validation(FIXTURE), unit="bytes")
    assert chart.y_from_zero and "largest gap 9.09%" in chart.title
    from tgauge.report.charts import figure

    fig = figure(chart)
    assert fig.axes[0].get_ylim()[0] == 0  # a 0.01% gap no longer fills the axis


def test_quadratic_series_counts_only_what_grows_with_s_squared() -> None:
    from estimator.spec import Workload
    from estimator.spec.presets import get_preset
    from tgauge.report.chartdata import quadratic_part, scaling_data

    spec, xs = get_preset("gpt2-small"), [128, 256, 1000]  # L = 12, h = 12, d_h = 64
    # dropout 0: GPT-2's usual 0.1 would add the scores' dropout mask to the quadratic part
    eager = Workload(mode="train", attention_impl="eager", dropout=0.0)
    flops, memory = scaling_data(spec, eager, xs)
    # FLOPs: scores and mix, 2 * h * s^2 * d_h each forward, backward twice the forward
    assert flops.series[1].y == [12 * 2 * (2 * 12 * s * s * 64) * 3 for s in xs]
    # memory (fp32, causal): the softmax output [h, s, s] x 4 bytes + the bool mask [s, s];
    # Q, K, V and the inputs of the projections grow linearly and are not counted
    assert memory.series[1].y == [12 * (12 * 4 + 1) * s * s for s in xs]
    # fused attention saves q, k, v, out and the logsumexp: nothing quadratic
    fused = Workload(mode="train", attention_impl="fused", dropout=0.0)
    assert scaling_data(spec, fused, xs)[1].series[1].y == [0.0, 0.0, 0.0]
    assert quadratic_part(lambda s: 3 * s * s + 7 * s + 5, 2) == 12  # forward points, s < 4


def test_report_from_a_sweep_states_the_sweep_workload(tmp_path) -> None:
    from typer.testing import CliRunner

    from tgauge.cli import app

    runner = CliRunner()
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "gpt2-small", "--mode", "prefill", "-b", "4", "--vary", "seq_len=64,128"]
    assert runner.invoke(app, [*args, "--out", str(sweep_dir)]).exit_code == 0
    res = runner.invoke(app, ["report", "--sweep", str(sweep_dir / "sweep.json"), "--out",
                              str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Varied: seq_len. Every other setting: prefill b=4 s=(varied)" in md
    assert "dtype=fp32" in md and "attention_impl=eager" in md
