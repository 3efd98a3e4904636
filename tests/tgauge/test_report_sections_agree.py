"""Report sections agree or say why (issue 23): the estimator section sizes the validated
workload unless `report --device` says otherwise, every section states device, optimizer
implementation, b and s, the memory stack's top is the peak (the optimizer step's temporaries
included), and the charts of one x share one label."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator import estimate
from estimator.spec import Workload
from estimator.spec.presets import get_preset
from tgauge.cli import app

pytest.importorskip("matplotlib")
runner = CliRunner()
DATA = Path(__file__).parent / "data" / "validation.jsonl"  # gpt2-small on cpu, b=2, s<=512


def _report(tmp_path: Path, *extra: str) -> str:
    args = ["report", "--model", "gpt2-small", "--validation", str(DATA), "--seq-lens", "128,256"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path), *extra])
    assert r.exit_code == 0, r.output
    return (tmp_path / "report.md").read_text()


def test_estimator_section_sizes_the_validated_workload(tmp_path: Path) -> None:
    md = _report(tmp_path)
    section = md[: md.index("## Validation")]
    assert "train, b=2, s=512" in section
    assert "device cpu, optimizer adamw (forloop step)" in section
    assert "Sized for the validated workload of gpt2-small" in section
    validation = md[md.index("## Validation") :]
    assert "train b=2 s=512 optimizer adamw (forloop step)" in validation


def test_report_device_sizes_the_given_workload(tmp_path: Path) -> None:
    md = _report(tmp_path, "--device", "cuda", "-b", "1", "-s", "256")
    section = md[: md.index("## Validation")]
    assert (
        "train, b=1, s=256" in section and "device cuda, optimizer adamw (foreach step)" in section
    )
    assert "Sized for the validated workload" not in section


def test_memory_stack_top_is_the_peak_with_the_step_temporaries() -> None:
    from tgauge.report.chartdata import memory_breakdown_data

    spec, w = get_preset("llama-3-8b"), Workload(seq_len=128)
    data = memory_breakdown_data(spec, w, [128, 256])
    for i, s in enumerate((128, 256)):
        top = sum(series.y[i] for series in data.series)
        assert top == estimate(spec, w.replace(seq_len=s)).peak_memory_bytes
    temporaries = next(x for x in data.series if x.label == "optimizer step temporaries")
    assert all(v > 0 for v in temporaries.y)  # the foreach step's peak at these lengths


def test_charts_of_one_field_share_one_x_label() -> None:
    from tgauge.report.chartdata import memory_breakdown_data, validation_lines_data
    from tgauge.report.validation import load_validation

    lines = validation_lines_data(load_validation(DATA))
    stack = memory_breakdown_data(get_preset("gpt2-small"), Workload(), [128, 256])
    assert lines and {c.x_label for c in lines} == {stack.x_label}
