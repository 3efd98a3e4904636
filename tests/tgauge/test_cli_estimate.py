"""`tgauge estimate`: tables, JSON equal to the library's Estimate, bad input -> exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.spec import Workload
from estimator.spec.presets import get_preset
from tgauge.cli import app

runner = CliRunner()


def test_json_equals_library_estimate():
    r = runner.invoke(app, ["estimate", "gpt2-small", "--mode", "train", "-b", "2", "-s", "64",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    expected = estimate(get_preset("gpt2-small"), Workload(batch_size=2, seq_len=64))
    assert json.loads(r.stdout) == json.loads(expected.model_dump_json())


def test_tables_show_summary_memory_flops():
    r = runner.invoke(app, ["estimate", "gpt2-small", "-b", "8", "-s", "1024"])
    assert r.exit_code == 0, r.output
    for title in ("Memory by term", "FLOPs by term", "peak memory", "GiB"):
        assert title in r.stdout
    assert " GB" not in r.stdout
    assert not re.search(r"┃\s+┃", r.stdout)  # no blank header


def test_textbook_table_only_on_request_with_its_sources():
    args = ["estimate", "llama-2-7b", "--mode", "decode", "--prompt-len", "512"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0 and "Back-of-envelope" not in plain.stdout
    assert "Seed notes" not in plain.stdout
    r = runner.invoke(app, [*args, "--textbook"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "Back-of-envelope formulas vs tgauge's exact count" in out
    assert "Pope et al. 2022" in out and "seed notes" in out
    kv_row = next(line for line in r.stdout.splitlines() if "KV cache" in line and "x" in line)
    assert "T^2" not in kv_row and "2 x b x L x T x d x bytes" in kv_row


def test_sliding_window_cap_of_the_kv_cache_is_stated():
    r = runner.invoke(app, ["estimate", "mistral-7b", "--mode", "decode", "--prompt-len", "32000"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "512.00 MiB (capped by the sliding window of 4,096: 4,096 of 32,001 positions" in out


def test_fp8_kv_cache_is_accepted_and_halves_the_bf16_cache():
    args = ["estimate", "llama-3-8b", "--mode", "decode", "--prompt-len", "1000", "--json"]
    kv = {}
    for dtype in ("bf16", "fp8", "fp8_e4m3", "fp8_e5m2"):
        r = runner.invoke(app, [*args, "--kv-cache-dtype", dtype])
        assert r.exit_code == 0, r.output
        kv[dtype] = json.loads(r.stdout)["kv_cache"]["total"]
    assert kv["fp8"] == kv["fp8_e4m3"] == kv["fp8_e5m2"] == kv["bf16"] // 2


def test_sum_of_terms_above_the_peak_is_explained_and_own_ops_are_not_subtotals():
    # fused AdamW: no step temporaries (torch's default on cuda, foreach, adds a whole fp32
    # exp_avg_sq in the step, which lifts the peak above the sum of the terms)
    r = runner.invoke(app, ["estimate", "llama-2-7b", "-s", "128", "--optimizer-impl", "fused"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    wl = Workload(
        dtype="bf16",
        master_weights=True,
        attention_impl="fused",
        seq_len=128,
        optimizer_impl="fused",
    )
    est = estimate(get_preset("llama-2-7b"), wl)
    assert est.memory.total > est.peak_memory_bytes  # the case the caption explains
    assert "sum of all terms (not all live)" in out
    # issue 23: neither the peak nor a bound on it (the peak can exceed it); what is live then
    assert "the sum of all terms is neither the peak nor a bound on it" in out
    assert "Memory at the peak (backward): what is live then" in out
    assert "ffn (own ops, not a subtotal)" in out  # the gated product, not the ffn's total
    assert "(x32 layers, subtotal)" in out


def test_rotary_context_limit_is_respected_unless_rope_scaled():
    err = _bad(["llama-3-8b", "-s", "9000"])
    assert "max_seq_len=8192" in err and "--rope-scaling" in err
    r = runner.invoke(app, ["estimate", "llama-3-8b", "-s", "9000", "--rope-scaling", "2"])
    assert r.exit_code == 0, r.output
    assert "rope scaling x2" in " ".join(r.stdout.split())
    # decode: prompt + new tokens count
    assert "max_seq_len=8192" in _bad(["llama-3-8b", "--mode", "decode", "--prompt-len",
                                        "8000", "--new-tokens", "193"])  # fmt: skip
    assert "not rotary" in _bad(["gpt2-small", "--rope-scaling", "2"])


def test_decode_table_shows_with_and_without_cache():
    r = runner.invoke(app, ["estimate", "llama-2-7b", "--mode", "decode", "--dtype", "fp16",
                            "--prompt-len", "64", "--new-tokens", "4"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "with KV cache" in r.stdout and "without cache" in r.stdout


def _bad(args: list[str]) -> str:
    r = runner.invoke(app, ["estimate", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return r.output


def test_unknown_preset_exits_2():
    assert "neither a preset nor a file" in _bad(["gpt9"])


def test_bad_mode_exits_2():
    assert "mode" in _bad(["gpt2-small", "--mode", "fly"])


def test_missing_file_exits_2():
    assert "no such file" in _bad(["missing/spec.json"])


def test_invalid_json_spec_exits_2(tmp_path: Path):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    assert "not valid" in _bad([str(bad)])


def test_decode_on_encoder_exits_2():
    assert "decode" in _bad(["bert-base", "--mode", "decode"])


def test_cli_does_not_import_torch():
    code = (
        "import sys; from tgauge.cli import app; "
        "sys.argv = ['tgauge', 'estimate', 'gpt2-small', '--json']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
