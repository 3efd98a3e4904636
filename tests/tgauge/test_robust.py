"""Issue 12: bad input, full disks and interrupted runs.

Each case states the command, its exit code, its one stderr line and the files afterwards:
no traceback, user text printed literally, bounded reads and work, nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip
GPT2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100,
        "n_positions": 128}  # fmt: skip
LLAMA = {"model_type": "llama", "num_attention_heads": 4, "hidden_size": 64,
         "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100,
         "max_position_embeddings": 128}  # fmt: skip
VIT = {"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
       "intermediate_size": 128, "image_size": 32, "patch_size": 16}  # fmt: skip
T5 = {"model_type": "t5", "d_model": 64, "num_layers": 2, "num_heads": 4, "d_kv": 16,
      "d_ff": 128, "vocab_size": 100}  # fmt: skip
GPU = {"name": "mygpu", "total_gib": 16, "peak_tflops": {"fp32": 10}, "bandwidth_tb_s": 1}
BOMB = (
    "model_type: gpt2\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "n_embd: *c\n"
)


def one_error(argv: list[str], fragment: str, code: int = 2) -> str:
    """Run argv in-process: exit ``code``, nothing on stdout, one stderr line with fragment."""
    r = runner.invoke(app, argv)
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    return lines[0]


def write(path: Path, data: object) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# ---- 1. tracebacks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["estimate", "foo[/]bar"], "no such file: foo[/]bar"),
        (["estimate", "[bold]x"], "MODEL='[bold]x'"),
        (["fit", "gpt2-small", "--gpu", "[/]"], "gpu='[/]'"),
        (["validate", "{tiny}", "-s", "8", "--device", "[/]"], "device='[/]'"),
        (["sweep", "gpt2-small", "--vary", "attention_pattern=[/]"], "attention_pattern='[/]'"),
    ],
)
def test_markup_in_user_text_is_printed_literally(tmp_path, argv, fragment):
    tiny = write(tmp_path / "tiny.json", TINY)
    one_error([a.format(tiny=tiny) for a in argv], fragment)


def test_spec_named_with_markup_estimates_and_prints_its_name(tmp_path):
    spec = write(tmp_path / "s.json", TINY | {"name": "[/]x[bold]"})
    r = runner.invoke(app, ["estimate", spec, "-s", "8"])
    assert r.exit_code == 0, r.output
    assert "[/]x[bold]: train" in r.stdout


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (LLAMA | {"num_attention_heads": 0}, "num_attention_heads=0 is invalid"),
        (VIT | {"patch_size": 0}, "patch_size=0 is invalid"),
        (LLAMA | {"hidden_size": "256"}, "hidden_size='256' is invalid"),
        (GPT2 | {"n_embd": "768"}, "n_embd='768' is invalid: an integer"),
        (LLAMA | {"rope_parameters": ["x"]}, "rope_parameters=['x'] is invalid"),
        (LLAMA | {"rope_parameters": {"rope_theta": "big"}}, "rope_theta='big' is invalid"),
        (T5 | {"feed_forward_proj": 5}, "feed_forward_proj=5 is invalid: a string"),
        (GPT2 | {"layer_norm_epsilon": -1}, "layer_norm_epsilon=-1 is invalid"),
        (GPT2 | {"n_layer": True}, "n_layer=True is invalid"),
        (GPT2 | {"model_type": ["gpt2"]}, "model_type=['gpt2'] must be a string"),
    ],
)
def test_hf_config_value_of_wrong_type_or_sign_is_rejected(tmp_path, config, fragment):
    one_error(["estimate", write(tmp_path / "config.json", config)], fragment)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"total_gib": float("inf")}, "total_gib=inf is invalid"),
        ({"total_gib": 1e300}, "total_gib=1e+300 is invalid"),
        ({"total_gib": -1}, "total_gib=-1 is invalid"),
        ({"peak_tflops": {"fp32": 0}}, "peak_tflops.fp32=0 is invalid"),
        ({"peak_tflops": {"fp32": -5}}, "peak_tflops.fp32=-5 is invalid"),
        ({"peak_tflops": {"fp32": float("inf")}}, "peak_tflops.fp32=inf is invalid"),
        ({"bandwidth_tb_s": -1}, "bandwidth_tb_s=-1 is invalid"),
        ({"bandwidth_tb_s": float("nan")}, "bandwidth_tb_s=nan is invalid"),
        ({"peak_tflops": "fast"}, "peak_tflops='fast' is invalid"),
    ],
)
def test_custom_gpu_field_must_be_finite_and_positive(tmp_path, fields, fragment):
    gpu = write(tmp_path / "gpu.json", json.dumps(GPU | fields))  # Infinity/NaN as JSON allows
    one_error(["fit", "gpt2-small", "-s", "64", "--gpu", gpu], fragment)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"points": "abc", "fields": ["seq_len"]}, "points='abc' must be a list"),
        ({"points": [], "fields": 5}, "fields=5 must be a list"),
        ({"points": [{"seq_len": 1, "flops": "12"}], "fields": ["seq_len"]}, "flops='12'"),
        ({"points": [{"seq_len": 1, "fits": "yes"}], "fields": ["seq_len"]}, "fits='yes'"),
        ([1, 2], "needs an object"),
    ],
)
def test_report_rejects_malformed_sweep_json(tmp_path, doc, fragment):
    sweep = write(tmp_path / "sweep.json", doc)
    one_error(["report", "--out", str(tmp_path / "r"), "--sweep", sweep], fragment)
    assert not (tmp_path / "r" / "report.md").exists()


def test_report_rejects_deeply_nested_validation_json(tmp_path):
    deep = write(tmp_path / "v.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    one_error(["report", "--out", str(tmp_path / "r"), "--validation", deep], "nested too deeply")


def test_presets_with_stdout_closed_exits_0_without_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "tgauge.cli", "presets"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),  # `tgauge presets >&-`
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ---- 2. unbounded work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "llama-2-7b", "--mode", "decode", "--vary", "new_tokens=1000000000"],
        ["validate", "{tiny}", "--mode", "decode", "-s", "4", "--sweep", "new_tokens=1000000000"],
    ],
)
def test_new_tokens_cap_holds_in_sweeps(tmp_path, argv):
    tiny = write(tmp_path / "tiny.json", TINY | {"position": "rotary"})
    one_error([a.format(tiny=tiny) for a in argv], "new_tokens=1000000000")


def test_library_caps_new_tokens():
    from pydantic import ValidationError

    from estimator.spec import MAX_NEW_TOKENS, Workload

    assert MAX_NEW_TOKENS == 2**17  # the stated cap: decode is walked step by step
    with pytest.raises(ValidationError, match="less than or equal to 131072"):
        Workload(mode="decode", new_tokens=10**30)


def test_yaml_bomb_in_hf_style_config_is_refused_without_expanding(tmp_path):
    line = one_error(["estimate", write(tmp_path / "config.yaml", BOMB)], "aliases")
    assert len(line) < 300 and "lol" not in line


def test_duplicate_keys_are_rejected(tmp_path):
    dup_json = write(tmp_path / "s.json", '{"d_model": 32, "d_model": 64}')
    one_error(["estimate", dup_json], "duplicate key 'd_model'")
    dup_yaml = write(tmp_path / "s.yaml", "arch: decoder\narch: encoder\n")
    one_error(["estimate", dup_yaml], "duplicate key 'arch'")


@pytest.mark.parametrize("option", [None, "--validation", "--sweep", "--gpu"])
def test_dev_zero_and_fifo_are_refused_not_read(tmp_path, option):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    for path in ("/dev/zero", str(fifo)):
        argv = {
            None: ["estimate", path],
            "--validation": ["report", "--out", str(tmp_path / "r"), "--validation", path],
            "--sweep": ["report", "--out", str(tmp_path / "r"), "--sweep", path],
            "--gpu": ["fit", "gpt2-small", "--gpu", path],
        }[option]
        if option == "--gpu" and path == "/dev/zero":
            continue  # a GPU argument is read as a file only when it ends in .json
        one_error(argv, "not a regular file")


def test_oversized_spec_file_is_refused(tmp_path):
    from estimator.inputfile import MAX_CONFIG_BYTES

    big = tmp_path / "big.json"
    big.write_text('{"name": "' + "x" * MAX_CONFIG_BYTES + '"}')
    one_error(["estimate", str(big)], "larger than 16 MiB")


def test_model_copy_with_negative_seq_len_is_revalidated_by_estimate():
    from pydantic import ValidationError

    from estimator import estimate
    from estimator.presets import get_preset
    from estimator.spec import Workload

    bad = Workload().model_copy(update={"seq_len": -5})
    with pytest.raises(ValidationError, match="seq_len"):
        estimate(get_preset("gpt2-small"), bad)
    with pytest.raises(ValidationError, match="seq_len"):
        Workload().replace(seq_len=-5)


def test_report_rejects_negative_seq_lens(tmp_path):
    out = tmp_path / "r"
    one_error(["report", "--out", str(out), "--model", "gpt2-small", "--seq-lens", "-5,16"],
              "--seq-lens='-5,16' is invalid")  # fmt: skip
    assert not out.exists() or not any(out.iterdir())


def test_report_seq_lens_past_max_positions_is_an_error_not_empty_charts(tmp_path):
    out = tmp_path / "r"
    argv = ["report", "--out", str(out), "--model", "gpt2-small", "--seq-lens", "2048,4096"]
    one_error(argv, "past its max_seq_len=1024")
    assert not out.exists() or not any(out.iterdir())


def test_report_seq_lens_partly_past_max_positions_says_so(tmp_path):
    argv = ["report", "--out", str(tmp_path), "--model", "gpt2-small", "-s", "64",
            "--seq-lens", "512,1024,2048"]  # fmt: skip
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("note: Charts stop at s=1024") and "2048" in r.stderr
    assert "left out: 2048" in (tmp_path / "report.md").read_text()
