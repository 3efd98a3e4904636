"""`tgauge fit`: answers as JSON, tables, and one-line errors with exit code 2."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()


def test_fit_json_reports_llama2_max_batch_of_the_hand_worked_case() -> None:
    # tests/estimator/test_plan.py: 80 GiB, no overheads -> 28 sequences of 4096 tokens
    args = [
        "fit",
        "llama-2-7b",
        "--gpu",
        "a100-80gb",
        "--mode",
        "prefill",
        "--dtype",
        "fp16",
        "--attention",
        "fused",
        "--seq-len",
        "4096",
        "--context-mib",
        "0",
        "--reserve",
        "0",
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["unusable_bytes"]["workspace"] == 32 * 2**20
    # the 32 MiB workspace still counts: (80 GiB - 32 MiB - W) // (4096 * 623,112) = 28
    assert doc["plan"]["max_batch"]["max_value"] == 28
    assert doc["plan"]["fit"]["fits"] is True
    assert doc["times"]["tokens"] == 4096


def test_fit_table_names_the_answers() -> None:
    res = runner.invoke(app, ["fit", "gpt2-small", "--gpu", "l4", "--seq-len", "256"])
    assert res.exit_code == 0, res.output
    assert "largest batch_size" in res.stdout and "fewest GPUs" in res.stdout


def test_unknown_gpu_is_one_line_exit_2() -> None:
    res = runner.invoke(app, ["fit", "gpt2-small", "--gpu", "tpu-v9"])
    assert res.exit_code == 2
    assert "gpu='tpu-v9' is unknown" in res.output
    assert "Traceback" not in res.output


def test_tp_not_dividing_heads_is_one_line_exit_2() -> None:
    res = runner.invoke(app, ["fit", "llama-3-8b", "--gpus", "3", "--tp", "3"])
    assert res.exit_code == 2 and "tp=3" in res.output


def test_fit_longest_chunked_context_of_issue_11_is_an_exact_boundary(tmp_path) -> None:
    # issue 11: 13,847,031,807 usable bytes (the card's total less the 500 MiB CUDA context
    # and the 32 MiB workspace, --reserve 0); chunked attention's peak falls at each chunk
    # boundary: every length up to 2047 fits, 2048 does not, 2049 .. 3074 partly do
    gpu = {
        "name": "issue-11",
        "total_bytes": 13_847_031_807 + 500 * 2**20 + 32 * 2**20,
        "peak_flops_per_s": {"bf16": 1e15},
        "bandwidth_bytes_per_s": 3e12,
    }
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(gpu))
    args = ["fit", "llama-2-7b", "--gpu", str(path), "--mode", "prefill", "--dtype", "bf16"]
    args += ["--pattern", "chunked", "--window", "256", "--seq-len", "512", "--reserve", "0"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    ctx = json.loads(res.stdout)["plan"]["max_context"]
    assert (ctx["max_value"], ctx["next_value"], ctx["longest_fitting"]) == (2047, 2048, 3074)
    assert ctx["max_fit"]["fits"] and not ctx["next_fit"]["fits"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "3074 fits, though 2048 does not" in " ".join(table.stdout.split())
