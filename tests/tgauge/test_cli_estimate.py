"""`tgauge estimate`: tables, JSON equal to the library's Estimate, bad input -> exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.presets import get_preset
from estimator.spec import Workload
from tgauge.cli import app

runner = CliRunner()


def test_json_equals_library_estimate():
    r = runner.invoke(app, ["estimate", "gpt2-small", "--mode", "train", "-b", "2", "-s", "64",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    expected = estimate(get_preset("gpt2-small"), Workload(batch_size=2, seq_len=64))
    assert json.loads(r.stdout) == json.loads(expected.model_dump_json())


def test_tables_show_summary_memory_flops_textbook():
    r = runner.invoke(app, ["estimate", "gpt2-small", "-b", "8", "-s", "1024"])
    assert r.exit_code == 0, r.output
    for title in ("Memory by term", "FLOPs by term", "textbook", "peak memory", "GiB"):
        assert title in r.stdout
    assert " GB" not in r.stdout


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
