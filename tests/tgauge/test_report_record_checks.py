"""`report --validation` checks each record once read (issue 23): negative numbers and
workload fields of the wrong type are skipped with a note naming the point; two models under
one name are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator.spec import SpecError
from tgauge.cli import app
from tgauge.report.record_checks import check_records
from tgauge.report.validation import load_validation

runner = CliRunner()


def _record(
    seq_len: object = 64, predicted: int = 1000, params: int = 500, model: str = "m"
) -> dict:
    return {
        "model": model, "device": "cpu", "status": "ok",
        "workload": {"mode": "train", "batch_size": 1, "seq_len": seq_len},
        "rows": [
            {"term": "peak_memory", "unit": "bytes", "predicted": predicted, "measured": 1000,
             "rel_error": 0.0, "verdict": "exact"},
            {"term": "embed", "unit": "params", "predicted": params, "measured": params,
             "rel_error": 0.0, "verdict": "exact"},
        ],
    }  # fmt: skip


def _file(tmp_path: Path, *records: dict) -> Path:
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_negative_predicted_bytes_are_skipped_with_a_note(tmp_path: Path) -> None:
    path = _file(tmp_path, _record(64), _record(128, predicted=-5))
    notes: list[str] = []
    kept = check_records(load_validation(path), path, notes)
    assert [r.workload["seq_len"] for r in kept] == [64]
    assert len(notes) == 1 and "point 2 (m train b=1 s=128)" in notes[0]
    assert "peak_memory predicted -5 bytes (negative)" in notes[0]


@pytest.mark.parametrize("bad", ["64", 64.5, True])
def test_workload_fields_of_the_wrong_type_are_skipped(tmp_path: Path, bad: object) -> None:
    path = _file(tmp_path, _record(64), _record(bad))
    notes: list[str] = []
    kept = check_records(load_validation(path), path, notes)
    assert len(kept) == 1 and "workload seq_len=" in notes[0] and "point 2" in notes[0]


def test_two_models_under_one_name_are_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, _record(64, params=500), _record(128, params=900))
    with pytest.raises(SpecError, match="two different models named 'm'"):
        check_records(load_validation(path), path, [])
    # different names are different models, drawn apart: fine
    path = _file(tmp_path, _record(64, params=500), _record(128, params=900, model="other"))
    assert len(check_records(load_validation(path), path, [])) == 2


def test_report_names_what_it_skipped_and_refuses_mixed_models(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = _file(tmp_path, _record(64), _record(128), _record(256, predicted=-1))
    r = runner.invoke(app, ["report", "--validation", str(path), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "skipped point 3 (m train b=1 s=256)" in " ".join(r.output.split())
    md = (tmp_path / "out" / "report.md").read_text()
    assert "s=256" not in md
    mixed = _file(tmp_path, _record(64, params=500), _record(128, params=900))
    r = runner.invoke(app, ["report", "--validation", str(mixed), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "two different models named 'm'" in r.output
