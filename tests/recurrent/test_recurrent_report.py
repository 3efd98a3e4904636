"""The peak in `tgauge estimate elmo` / compare, and the report section "Transformer vs LSTM
at equal parameters" (tgauge/report/compare_section.py, `tgauge report --compare`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from estimator.plan.compare import compare, recurrent_estimate
from estimator.plan.hardware import get_gpu
from estimator.replay.recurrent_step import recurrent_train_peak
from estimator.spec.recurrent import RECURRENT_PRESETS
from tgauge.cli import app
from tgauge.report.compare_section import compare_charts, compare_section

runner = CliRunner()


def test_estimate_carries_the_peak_and_refuses_seq2seq_by_name():
    est = recurrent_estimate(RECURRENT_PRESETS["elmo"], 8, 128)
    assert est.peak == recurrent_train_peak(RECURRENT_PRESETS["elmo"], 8, 128)
    # the peak's parts add up, the baseline is weights + AdamW's two states (+ 0-dim steps)
    assert sum(est.peak.parts.values()) == est.peak.peak_bytes
    w = est.memory.terms["weights"]
    assert est.peak.parts["baseline.weights"] == w
    assert 2 * w < est.peak.parts["baseline.optimizer"] < 2 * w + 4096
    # never above every term at once, never below the baseline + saved activations
    acts = sum(v for k, v in est.memory.terms.items() if k.startswith("activations."))
    assert 3 * w + acts < est.peak.peak_bytes < est.memory.total
    seq2seq = recurrent_estimate(RECURRENT_PRESETS["lstm-seq2seq"], 1, 16)
    assert seq2seq.peak is None and "seq2seq" in seq2seq.peak_refused


def test_compare_rows_use_the_peak_for_the_lstm_lm():
    rows = compare(["elmo", "lstm-seq2seq"], [64], 2, get_gpu("a100-80gb")).rows
    elmo, s2s = rows
    assert (
        elmo.train_memory_kind == "peak" and elmo.peak_phase == "optimizer_step"
    )  # b=2, T=64: the for-loop AdamW temporaries
    assert (
        elmo.train_memory_bytes == recurrent_train_peak(RECURRENT_PRESETS["elmo"], 2, 64).peak_bytes
    )
    assert s2s.train_memory_kind == "sum of terms" and s2s.peak_phase is None


def test_compare_charts_one_line_per_model_against_length():
    rows = compare(["elmo", "gpt2-small"], [64, 128, 256], 2, get_gpu("a100-80gb")).rows
    charts = {c.name: c for c in compare_charts(rows, "a100-80gb")}
    assert set(charts) == {"compare_memory", "compare_flops", "compare_sequential", "compare_time"}
    seq = charts["compare_sequential"]
    elmo, gpt = seq.series
    assert elmo.label == "elmo (LSTM)" and elmo.x == [64, 128, 256]
    assert elmo.y == [2 * 64, 2 * 128, 2 * 256]  # 2 layers x T dependent steps
    assert gpt.y == [12, 12, 12] and seq.log_y
    mem = charts["compare_memory"].series[0].y
    assert mem == [r.train_memory_bytes for r in rows if r.name == "elmo"]


def test_section_states_the_equal_parameter_framing_and_skips():
    section = compare_section(["elmo", "gpt2-small", "bert-base"], [256, 1024], 1)
    assert section.heading == "Transformer vs LSTM at equal parameters"
    text = " ".join(section.paragraphs)
    assert "Equal parameters" in text and "93.60 M" in text and "109.48 M" in text
    assert "bert-base at T=1024 left out" in text
    assert len(section.tables[0].rows) == 5  # bert-base has no T=1024 row
    assert len(section.charts) == 4


def test_cli_estimate_elmo_shows_the_peak():
    r = runner.invoke(app, ["estimate", "elmo", "--mode", "train", "-b", "2", "-s", "64"])
    assert r.exit_code == 0, r.output
    assert "training step peak" in r.output and "baseline.optimizer" in r.output
    r = runner.invoke(app, ["estimate", "elmo", "-b", "2", "-s", "64", "--json"])
    data = json.loads(r.stdout)
    peak = recurrent_train_peak(RECURRENT_PRESETS["elmo"], 2, 64)
    assert data["peak"]["peak_bytes"] == peak.peak_bytes and data["peak"]["phase"] == peak.phase


def test_cli_report_compare_writes_the_section(tmp_path):
    pytest.importorskip("matplotlib")
    r = runner.invoke(
        app,
        ["report", "--compare", "default", "--compare-seq-lens", "64,128", "--out", str(tmp_path)],
    )
    assert r.exit_code == 0, r.output
    md = (tmp_path / "report.md").read_text()
    assert "## Transformer vs LSTM at equal parameters" in md
    assert "charts/compare_sequential.svg" in md
    assert "compare_time" in (tmp_path / "report.html").read_text()
    r = runner.invoke(
        app, ["report", "--compare", "default", "--compare-seq-lens", "0", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_cli_compare_shows_what_is_live_at_the_recurrent_peak():
    r = runner.invoke(app, ["compare", "elmo,gpt2-small", "-s", "64,128", "-b", "2"])
    assert r.exit_code == 0, r.output
    peak = recurrent_train_peak(RECURRENT_PRESETS["elmo"], 2, 128)
    assert f"elmo at T=128: live at the peak ({peak.phase})" in r.output
    assert "baseline.optimizer" in r.output and "peak (" in r.output
