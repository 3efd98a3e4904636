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
    # 3 ok records x (weights bytes, ffn.up flops, embed params) measured rows
    assert {k: len(s.x) for k, s in by_label.items()} == {"bytes": 3, "FLOPs": 3, "parameters": 3}
    assert by_label["FLOPs"].x == by_label["FLOPs"].y  # exact rows sit on the diagonal
    assert by_label["bytes"].x == [1100, 2050, 4000] and by_label["bytes"].y == [1000, 2000, 4000]
