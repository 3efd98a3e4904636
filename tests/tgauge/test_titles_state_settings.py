"""profile and validate titles state mode, b, s, precision and attention (issue 23); int8 /
int4 weights are refused by both rather than measured in bf16 under an int8 label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

pytest.importorskip("torch")
runner = CliRunner()
TINY = {"name": "tiny", "arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64,
        "n_layers": 2, "vocab_size": 61, "max_seq_len": 64}  # fmt: skip


@pytest.fixture
def spec_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())  # a title may wrap


@pytest.mark.parametrize("command", ["profile", "validate"])
def test_title_states_b_s_and_attention(spec_file: str, command: str) -> None:
    args = [command, spec_file, "-b", "2", "-s", "8", "--attention", "fused", "--dropout", "0.1"]
    r = runner.invoke(app, [*args, *(["--repeats", "1"] if command == "profile" else [])])
    assert r.exit_code == 0, r.output
    text = _flat(r.stdout)
    assert "train, b=2, s=8, fp32 weights, compute fp32, attention fused, dropout 0.1" in text


@pytest.mark.parametrize("command", ["profile", "validate"])
@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_quantized_weights_are_refused_not_mislabelled(
    spec_file: str, command: str, dtype: str
) -> None:
    r = runner.invoke(app, [command, spec_file, "--mode", "prefill", "--dtype", dtype])
    assert r.exit_code == 2
    assert f"--dtype {dtype} cannot be measured" in r.output
    assert "does not quantize" in r.output
