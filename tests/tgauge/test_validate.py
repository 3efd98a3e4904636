"""make_row / compare / tolerance_of: verdicts follow the tolerance table by definition."""

from __future__ import annotations

from tgauge.comparison import TOLERANCES, compare, make_row, tolerance_of


def test_tolerance_of_uses_the_longest_quantity_prefix():
    assert (
        tolerance_of("memory.activations.decoder.layers.ffn.up") == TOLERANCES["memory.activations"]
    )
    assert tolerance_of("memory.optimizer.exp_avg") == 0.0
    assert tolerance_of("peak_memory") == TOLERANCES["peak_memory"]
    assert tolerance_of("something.else") == 0.0


def test_make_row_verdicts_exact_within_off_not_measured():
    assert make_row("params.embed", "params", 10, 10).verdict == "exact"
    assert make_row("params.embed", "params", 11, 10).verdict == "off"  # exact quantity
    assert make_row("peak_memory", "bytes", 1010, 1000).verdict == "within"  # 1% <= 2%
    assert make_row("peak_memory", "bytes", 1030, 1000).verdict == "off"  # 3% > 2%
    row = make_row("flops.total", "flops", 5, None, "no formula")
    assert (row.verdict, row.abs_error, row.note) == ("not measured", None, "no formula")


def test_make_row_errors_are_signed_predicted_minus_measured():
    row = make_row("memory.activations.loss", "bytes", 99, 100)
    assert (row.abs_error, row.rel_error, row.verdict) == (-1, 0.01, "within")
    assert make_row("memory.activations.loss", "bytes", 1, 0).verdict == "off"


def test_compare_takes_the_union_of_terms_and_adds_a_total():
    rows = compare("memory.optimizer", "bytes", {"a": 4, "b": 2}, {"a": 4, "c": 1})
    by = {r.term: r for r in rows}
    assert by["memory.optimizer.b"].measured == 0 and by["memory.optimizer.b"].verdict == "off"
    assert by["memory.optimizer.c"].predicted == 0
    assert (by["memory.optimizer.total"].predicted, by["memory.optimizer.total"].measured) == (6, 5)


def test_compare_unmeasured_terms_are_left_out_of_the_total():
    rows = compare("flops", "flops", {"x.sdpa": 7, "x.mm": 3}, {"x.mm": 3},
                   unmeasured=frozenset({"x.sdpa"}), note="no formula")  # fmt: skip
    by = {r.term: r for r in rows}
    assert by["flops.x.sdpa"].verdict == "not measured"
    assert by["flops.total"].verdict == "exact" and by["flops.total"].predicted == 3
    assert all(r.verdict == "not measured" for r in compare("p", "bytes", {"a": 1}, None))


def _failing_point(monkeypatch, exc: Exception):
    import tgauge.validate as v
    from tgauge.matrix import cases

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(v, "_train", boom)
    case = cases()[0]
    return v.validate_point(case.spec, case.workload, available=1)


def test_out_of_memory_point_is_recorded_as_did_not_fit(monkeypatch) -> None:
    point = _failing_point(monkeypatch, RuntimeError("CUDA out of memory. Tried to allocate"))
    assert point.status == "did_not_fit" and point.rows == []
    assert point.predicted_fits is False  # the estimator's answer stays beside it
    assert "out of memory" in point.notes[0]


def test_failing_point_is_recorded_as_error_not_raised(monkeypatch) -> None:
    point = _failing_point(monkeypatch, RuntimeError("boom\nsecond line"))
    assert point.status == "error" and point.notes == ["RuntimeError: boom"]
