"""`tgauge fit`: answers as JSON, tables, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()


def test_fit_json_reports_llama2_max_batch_of_the_hand_worked_case() -> None:
    # tests/estimator/plan/test_plan.py: 80 GiB, no overheads -> 28 sequences of 4096 tokens
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


DECODE = ["fit", "llama-2-7b", "--gpu", "a100-80gb", "--mode", "decode", "--dtype", "fp16",
          "--attention", "fused", "--prompt-len", "3840", "--new-tokens", "256"]  # fmt: skip


def test_decode_fit_labels_first_token_output_tokens_and_per_gpu_rates() -> None:
    res = runner.invoke(app, DECODE)
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    for label in (
        "time to first token (prefill of the batch)",
        "time per output token, first step",
        "time per output token, last step (256)",
        "generated tokens/s per GPU (prefill excluded)",
        "generated tokens/s for all GPUs (1)",
        "concurrent sequences per replica",
        "blocks of 16 tokens, 90% of GPU memory",
        "decode tokens/s per GPU at that concurrency",
    ):
        assert label in out, label
    assert "decode step" not in out  # the prefill is no longer called a decode step


def test_decode_fit_json_holds_serving_capacity_and_options_override_it() -> None:
    res = runner.invoke(app, [*DECODE, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    serving, speed = doc["serving"], doc["throughput"]
    assert serving["block_size"] == 16 and serving["gpu_memory_utilization"] == 0.9
    assert serving["blocks_per_sequence"] == 4096 // 16
    assert serving["block_bytes"] == 8 * 2**20  # 16 * 32 heads * 128 * 2 (K, V) * 32 * 2 B
    n = serving["max_concurrent_sequences"]
    assert n * 256 <= serving["n_blocks"] < (n + 1) * 256
    prefill = doc["times"]["step"]  # the roofline of the prefill
    assert speed["ttft_s"] == max(prefill["compute_s"], prefill["memory_s"])
    assert speed["tpot_first_s"] < speed["ttft_s"]
    res = runner.invoke(
        app, [*DECODE, "--json", "--block-size", "32", "--gpu-memory-utilization", "0.5"]
    )
    doc2 = json.loads(res.stdout)["serving"]
    assert doc2["blocks_per_sequence"] == 128 and doc2["block_bytes"] == 16 * 2**20
    assert doc2["budget_bytes"] == int(80 * 2**30 * 0.5)
    assert doc2["max_concurrent_sequences"] < n


def test_training_throughput_is_labelled_per_gpu_and_for_all_gpus() -> None:
    args = ["fit", "gpt2-small", "--gpu", "h100", "-s", "256", "--gpus", "8", "--zero", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    assert "tokens/s per GPU" in out and "tokens/s for all GPUs (8)" in out
    doc = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["throughput"]
    assert doc["tokens_per_s_all_gpus"] == pytest.approx(8 * doc["tokens_per_s_per_gpu"])


def test_fewest_gpus_names_the_one_fewer_that_does_not_fit() -> None:
    args = ["fit", "llama-2-7b", "--gpu", "a100-80gb", "-s", "2048", "--zero", "3"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if "fewest GPUs" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    answer, strategy = cells[1].split(" ", 1)  # "2 (zero=1, tp=1)": the strategy it found
    answer, smaller = int(answer), cells[2]
    assert answer > 1 and smaller == f"{answer - 1} (one fewer)"
    assert strategy.startswith("(zero=")


def test_no_table_has_a_blank_header() -> None:
    res = runner.invoke(app, DECODE)
    assert res.exit_code == 0, res.output
    assert not re.search(r"┃\s+┃", res.stdout), res.stdout


def test_longest_context_respects_the_rotary_limit_unless_rope_scaled() -> None:
    res = runner.invoke(app, [*DECODE, "--json"])
    limit = json.loads(res.stdout)["plan"]["max_context"]
    assert limit["max_value"] == 4096 - 256 and "context limit" in limit["capped_by"]
    res = runner.invoke(app, [*DECODE, "--rope-scaling", "4", "--json"])
    assert json.loads(res.stdout)["plan"]["max_context"]["max_value"] > 4096
    res = runner.invoke(app, [*DECODE[:-4], "--prompt-len", "4096", "--new-tokens", "256"])
    assert res.exit_code == 2 and "max_seq_len=4096" in res.output


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
    args += ["--attention", "eager"]  # the issue's run, before presets defaulted to fused
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    ctx = json.loads(res.stdout)["plan"]["max_context"]
    assert (ctx["max_value"], ctx["next_value"], ctx["longest_fitting"]) == (2047, 2048, 3074)
    assert ctx["max_fit"]["fits"] and not ctx["next_fit"]["fits"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "3074 fits, though 2048 does not" in " ".join(table.stdout.split())
