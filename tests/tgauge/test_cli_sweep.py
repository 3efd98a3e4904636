"""`tgauge sweep`: files written, rows parse, bad ranges are one-line errors."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()


def test_sweep_writes_csv_and_json_with_every_point(tmp_path) -> None:
    res = runner.invoke(
        app,
        [
            "sweep",
            "gpt2-small",
            "--vary",
            "seq_len=128..512",
            "--vary",
            "batch_size=1,2",
            "--gpu",
            "l4",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["seq_len"], r["batch_size"]) for r in rows] == [
        ("128", "1"),
        ("128", "2"),
        ("256", "1"),
        ("256", "2"),
        ("512", "1"),
        ("512", "2"),
    ]
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert [p["peak_memory_bytes"] for p in doc["points"]] == [
        int(r["peak_memory_bytes"]) for r in rows
    ]


def test_sweep_json_on_stdout() -> None:
    res = runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--json"])
    assert res.exit_code == 0, res.output
    assert [p["seq_len"] for p in json.loads(res.stdout)] == [64, 128]


def test_bad_range_is_one_line_exit_2() -> None:
    res = runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=8..2"])
    assert res.exit_code == 2 and "range='8..2'" in res.output
