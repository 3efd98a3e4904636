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


def test_sweep_table_headers_say_gib_and_empty_columns_are_dropped() -> None:
    res = runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64,128"])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if "seq_len" in line and "┃" in line)
    assert "peak (GiB)" in header and "_bytes" not in res.stdout
    # train without --gpu: no KV cache, no fits / headroom, no error: those columns are gone
    for gone in ("KV cache", "fits", "headroom", "error"):
        assert gone not in res.stdout, gone


def test_sweep_with_gpu_has_a_headroom_column() -> None:
    args = ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--gpu", "l4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "headroom (GiB)" in " ".join(res.stdout.split()) and "fits" in res.stdout
    rec = json.loads(runner.invoke(app, [*args, "--json"]).stdout)[0]
    shown = f"{rec['headroom_bytes'] / 2**30:,.2f}"
    assert shown in res.stdout


def test_vary_accepts_the_cli_option_names() -> None:
    args = ["sweep", "gpt2-small", "--vary", "attention=eager,fused", "--vary", "s=64", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    points = json.loads(res.stdout)
    assert [p["attention_impl"] for p in points] == ["eager", "fused"]
    assert points[0]["activations_bytes"] != points[1]["activations_bytes"]


def test_sweep_rows_past_the_rotary_limit_carry_the_reason() -> None:
    args = ["sweep", "llama-3-8b", "--mode", "prefill", "--vary", "seq_len=8192,9000", "--json"]
    points = json.loads(runner.invoke(app, args).stdout)
    assert points[0]["error"] == "" and "max_seq_len=8192" in points[1]["error"]
    scaled = json.loads(runner.invoke(app, [*args, "--rope-scaling", "2"]).stdout)
    assert scaled[1]["error"] == ""
