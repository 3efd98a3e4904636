"""Report: chart data built from the inputs, files written, every chart in the HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from estimator.spec import SpecError
from tgauge.report.chartdata import parity_data, validation_lines_data
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
    assert "seq_len" in chart.x_label


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
    assert "| train b=2 s=128 |" in md  # workloads summarised, not dumped as JSON
    for svg in charts:
        assert f"charts/{svg.name}" in md
        assert f'id="chart-{re.sub(r"[^A-Za-z0-9_-]", "_", svg.stem)}"' in page


def test_kv_growth_and_decode_cost_data_come_from_the_estimator() -> None:
    from estimator.estimate import estimate
    from estimator.kv_cache import kv_cache_at
    from estimator.presets import get_preset
    from estimator.spec import Workload
    from tgauge.report.chartdata import decode_cost_data, kv_growth_data

    spec = get_preset("gpt2-small")
    wl = Workload(mode="decode", prompt_len=10, new_tokens=3)
    kv = kv_growth_data(spec, wl).series[0]
    assert kv.x == [0, 1, 2, 3] and kv.y == [kv_cache_at(spec, wl, t).total for t in range(4)]
    dec = estimate(spec, wl).decode
    with_cache, without = decode_cost_data(spec, wl).series
    assert with_cache.y[-1] == dec.total_with_cache_flops
    assert without.y[-1] == dec.total_without_cache_flops


def test_memory_breakdown_stacks_sum_to_the_memory_total() -> None:
    from estimator.estimate import estimate
    from estimator.presets import get_preset
    from estimator.spec import Workload
    from tgauge.report.chartdata import memory_breakdown_data

    spec, wl = get_preset("gpt2-small"), Workload(mode="train", attention_impl="eager")
    data = memory_breakdown_data(spec, wl, [128, 256])
    for i, s in enumerate([128, 256]):
        total = estimate(spec, wl.model_copy(update={"seq_len": s})).memory.total
        assert sum(series.y[i] for series in data.series) == total
    assert "activations (attention s x s)" in [s.label for s in data.series]
