"""Bad input to any command: exit code 2, ONE line on stderr naming the problem, no traceback,
nothing on stdout (so `--json` never prints garbage), and nothing already written is lost.

typer's CliRunner keeps stderr apart from stdout (click >= 8.2): ``r.stdout == ""`` below
proves the error went to stderr only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
HUGE = str(10**12)

TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip
FILES = {
    "tiny.json": json.dumps(TINY),
    "enc.json": json.dumps(TINY | {"arch": "encoder"}),
    "extra.json": json.dumps(TINY | {"colour": "red"}),
    "neg.json": json.dumps(TINY | {"d_model": -32}),
    "badval.json": json.dumps(TINY | {"d_model": "big"}),
    "hf_unknown.json": json.dumps({"model_type": "foobar", "hidden_size": 32}),
    "broken.json": '{"arch": "decoder", "d_model":',
    "broken.yaml": "arch: decoder\nd_model: [1,\n",
    "empty.yaml": "",
    "corrupt.jsonl": "not json {\n",
    "empty.jsonl": "",
}


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name, text in FILES.items():
        (root / name).write_text(text)
    (root / "emptydir").mkdir()
    return root


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


no_cuda = pytest.mark.skipif(_cuda(), reason="this machine has CUDA")

# (argv with {d} for the data folder, a fragment the message must hold)
CASES = [
    # MODEL loading, shared by every command
    (["estimate", "gpt9"], "neither a preset nor a file"),
    (["estimate", "gpt2-smal"], "did you mean 'gpt2-small'"),
    (["estimate", "missing/spec.json"], "no such file"),
    (["estimate", "{d}/emptydir"], "without config.json"),
    (["estimate", "{d}/broken.json", "--json"], "is not valid json"),
    (["estimate", "{d}/broken.yaml"], "is not valid yaml"),
    (["estimate", "{d}/empty.yaml"], "is empty"),
    (["estimate", "{d}/extra.json"], "unknown field 'colour'"),
    (["estimate", "{d}/neg.json"], "d_model=-32"),
    (["estimate", "{d}/badval.json", "--json"], "d_model='big'"),
    (["estimate", "{d}/hf_unknown.json"], "model_type='foobar' is unknown"),
    # workload options
    (["estimate", "gpt2-small", "-b", "0"], "batch_size=0"),
    (["estimate", "gpt2-small", "-s", "-5", "--json"], "seq_len=-5"),
    (["estimate", "gpt2-small", "--mode", "fly"], "'train', 'prefill' or 'decode'"),
    (["estimate", "gpt2-small", "--dtype", "fp64"], "dtype='fp64'"),
    (["estimate", "gpt2-small", "--attention", "flashy"], "'eager' or 'fused'"),
    (["estimate", "gpt2-small", "--pattern", "diagonal"], "attention_pattern='diagonal'"),
    (["estimate", "gpt2-small", "--pattern", "sliding_window"], "needs a window"),
    (["estimate", "{d}/enc.json", "--mode", "decode", "-s", "16"], "decode needs a decoder"),
    (["estimate", "{d}/tiny.json", "-s", "100"], "max_seq_len=64"),
    (["estimate", "gpt2-small", "-b", "abc"], "Invalid value for '--batch-size'"),
    (["estimate", "llama-2-7b", "--mode", "decode", "--new-tokens", HUGE], "new_tokens="),
    (["estimat", "gpt2-small"], "Did you mean 'estimate'"),
    (["estimate"], "Missing argument"),
    (["presets", "--bogus"], "No such option: --bogus"),
    # fit
    (["fit", "gpt2-small", "--gpu", "h1000"], "did you mean 'h100-sxm'"),
    (["fit", "gpt2-small", "--gpu", "{d}/tiny.json"], "unknown field(s) arch"),
    (["fit", "gpt2-small", "--gpus", "0"], "'--gpus'"),
    (["fit", "gpt2-small", "--tokens", "0"], "'--tokens'"),
    (["fit", "gpt2-small", "--zero", "5", "--json"], "'--zero'"),
    # sweep
    (["sweep", "gpt2-small"], "--vary is required"),
    (["sweep", "gpt2-small", "--vary", "seq_len"], "use field=range"),
    (["sweep", "gpt2-small", "--vary", "seq_len=a..b", "--json"], "range='a..b'"),
    (["sweep", "gpt2-small", "--vary", "bogus=1,2"], "not a Workload field"),
    (["sweep", "gpt2-small", "--vary", f"seq_len=1..{HUGE}:1"], "at most 1,000,000"),
    (["sweep", "gpt2-small", "--vary", "seq_len=8", "--vary", "seq_len=16"], "varied once"),
    (["sweep", "gpt2-small", "--vary", "seq_len=64", "--gpu", "h1000"], "gpu='h1000'"),
    (["sweep", "gpt2-small", "--vary", "seq_len=64", "--out", "{d}/tiny.json"], "is a file"),
    (["sweep", "gpt2-small", "--vary", "seq_len=64", "--out", "{d}/tiny.json/x"], "cannot be"),
    # validate
    (["validate"], "give a MODEL"),
    (["validate", "--matrix", "gpt2-small"], "--matrix runs the built-in cases"),
    (["validate", "gpt2-smal", "--json"], "did you mean 'gpt2-small'"),
    (["validate", "{d}/tiny.json", "-s", "16", "--device", "tpu"], "device='tpu'"),
    pytest.param(
        ["validate", "{d}/tiny.json", "-s", "16", "--device", "cuda"], "use cpu", marks=no_cuda
    ),  # fmt: skip
    (["validate", "{d}/tiny.json", "--sweep", "seq_len"], "use field=range"),
    (["validate", "{d}/tiny.json", "--sweep", "spec.d_model=32"], "workload fields only"),
    (["validate", "{d}/tiny.json", "--sweep", "seq_len=8,100"], "max_seq_len=64"),
    (["validate", "{d}/tiny.json", "-s", "16", "-b", HUGE, "--json"], "this machine has"),
    (["validate", "{d}/tiny.json", "-s", "16", "--out", "{d}/tiny.json"], "is a file"),
    # report
    (["report", "--out", "{d}/r"], "nothing to report"),
    (["report", "--out", "{d}/r", "--validation", "{d}/missing.jsonl"], "cannot read"),
    (["report", "--out", "{d}/r", "--validation", "{d}/corrupt.jsonl"], "not a validation"),
    (["report", "--out", "{d}/r", "--validation", "{d}/empty.jsonl"], "no validation records"),
    (["report", "--out", "{d}/r", "--sweep", "{d}/tiny.json"], "not a sweep.json"),
    (
        [
            "report",
            "--out",
            "{d}/tiny.json",
            "--model",
            "{d}/tiny.json",
            "-s",
            "16",
            "--seq-lens",
            "8..16",
        ],
        "is a file",
    ),  # fmt: skip
    (
        ["report", "--out", "{d}/r", "--model", "gpt2-small", "--seq-lens", "1..10000:1"],
        "at most 200 integers",
    ),  # fmt: skip
    # profile
    (["profile", "gpt2-smal"], "did you mean 'gpt2-small'"),
    (["profile", "{d}/tiny.json", "-s", "16", "--device", "tpu"], "use cpu, cuda or meta"),
    pytest.param(
        ["profile", "{d}/tiny.json", "-s", "16", "--device", "cuda"],
        "CUDA is not available",
        marks=no_cuda,
    ),  # fmt: skip
    (["profile", "{d}/tiny.json", "-s", "16", "--dtype", "int8"], "dtype='int8'"),
    (["profile", "{d}/enc.json", "-s", "16", "--mode", "decode"], "decode needs a decoder"),
    (["profile", "{d}/tiny.json", "-s", "100", "--json"], "max_seq_len=64"),
    (["profile", "{d}/hf_unknown.json", "-s", "16"], "cannot build model_type='foobar'"),
    (["profile", "{d}/tiny.json", "-s", "16", "-b", HUGE], "this machine has"),
    (["profile", "{d}/tiny.json", "--repeats", "0"], "'--repeats'"),
]


@pytest.mark.parametrize(("argv", "fragment"), CASES)
def test_bad_input_exits_2_with_one_stderr_line(d, argv, fragment):
    r = runner.invoke(app, [a.format(d=d) for a in argv])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    assert r.stdout == ""  # no half-written JSON or table
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


def test_huge_batch_estimate_is_valid_json_at_once():
    start = time.perf_counter()
    # 10^12 tokens are past Llama-2's 4096 positions: a rope scaling factor allows them
    r = runner.invoke(app, ["estimate", "llama-2-7b", "-b", HUGE, "-s", HUGE, "--rope-scaling",
                            "1e9", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    est = json.loads(r.stdout)
    assert est["workload"]["batch_size"] == 10**12
    assert time.perf_counter() - start < 10  # a guard against a hang, not a benchmark


def test_bad_validate_run_keeps_points_already_written(d, tmp_path):
    spec = str(d / "tiny.json")
    good = ["validate", spec, "--mode", "prefill", "-s", "8", "--out", str(tmp_path)]
    assert runner.invoke(app, good).exit_code == 0
    jsonl = tmp_path / "validation.jsonl"
    before = jsonl.read_text()
    bad = runner.invoke(app, [*good, "--sweep", "seq_len=8,100"])
    assert bad.exit_code == 2
    assert jsonl.read_text() == before and len(before.splitlines()) == 1


def test_bad_sweep_keeps_sweep_already_written(tmp_path):
    good = ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--out", str(tmp_path)]
    assert runner.invoke(app, good).exit_code == 0
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert set(written) == {"sweep.csv", "sweep.json"}
    bad = runner.invoke(app, [*good[:-2], "--vary", "batch_size=0,1", "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == written
