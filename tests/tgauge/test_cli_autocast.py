"""--autocast on the commands that take a workload (issue 10): JSON of the same shape, titles
that tell autocast, pure low precision and an fp32 master copy apart, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.spec import Workload
from estimator.spec.presets import get_preset
from tgauge.cli import app

runner = CliRunner()
TINY = {"name": "tiny", "arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64,
        "n_layers": 2, "vocab_size": 61, "max_seq_len": 64}  # fmt: skip


def _keys(obj: object, prefix: str = "") -> set[str]:
    """Every key path of a JSON object (the shape, without the values of term dicts)."""
    if not isinstance(obj, dict):
        return set()
    out = set()
    for k, v in obj.items():
        if prefix.endswith("terms"):
            continue
        out.add(f"{prefix}.{k}")
        out |= _keys(v, f"{prefix}.{k}")
    return out


def test_estimate_json_under_autocast_is_the_library_estimate_in_the_same_shape():
    # --dropout 0: GPT-2 trains with dropout 0.1 (its usual setting), not modelled under autocast
    args = ["estimate", "gpt2-small", "-b", "2", "-s", "64", "--dropout", "0", "--json"]
    plain = runner.invoke(app, args)
    ac = runner.invoke(app, [*args, "--autocast", "bf16"])
    assert plain.exit_code == 0 and ac.exit_code == 0, ac.output
    expected = estimate(
        get_preset("gpt2-small"), Workload(batch_size=2, seq_len=64, autocast="bf16", dropout=0)
    )
    assert json.loads(ac.stdout) == json.loads(expected.model_dump_json())
    assert _keys(json.loads(ac.stdout)) == _keys(json.loads(plain.stdout))


def test_titles_tell_autocast_pure_bf16_and_master_weights_apart():
    base = ["estimate", "gpt2-small", "-b", "1", "-s", "128", "--dropout", "0"]
    phrases = {
        "fp32 weights, autocast bf16": ["--autocast", "bf16"],
        "pure bf16 weights, grads and optimizer states, compute bf16": ["--dtype", "bf16"],
        "bf16 weights + fp32 master, compute bf16": ["--dtype", "bf16", "--master-weights"],
    }
    for phrase, extra in phrases.items():
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 0, r.output
        text = " ".join(r.stdout.replace("│", " ").split())  # the title may wrap
        assert phrase in text
        assert not any(other in text for other in phrases if other != phrase)


def test_a_preset_trained_in_bf16_keeps_fp32_weights_under_autocast():
    r = runner.invoke(app, ["estimate", "llama-2-7b", "-s", "256", "--autocast", "bf16", "--json"])
    assert r.exit_code == 0, r.output
    workload = json.loads(r.stdout)["workload"]
    assert workload["dtype"] == "fp32" and workload["master_weights"] is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--autocast", "bf16", "--dtype", "bf16"], "autocast='bf16' needs fp32 weights"),
        (["--autocast", "bf16", "--mode", "prefill"], "--autocast applies to --mode train"),
        (["--autocast", "fp8"], "autocast"),
    ],
)
def test_bad_autocast_is_one_line_exit_2(extra: list[str], message: str):
    r = runner.invoke(app, ["estimate", "gpt2-small", "-s", "64", *extra])
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_validate_autocast_measures_the_reference_model_under_torch_autocast(tmp_path: Path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    r = runner.invoke(app, ["validate", str(spec), "-b", "2", "-s", "16", "--autocast", "bf16",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = {row["term"]: row for row in json.loads(r.stdout)}
    assert rows["memory.activations.total"]["verdict"] == "exact"
    assert rows["peak_memory"]["verdict"] in ("exact", "within")
    # q_proj saves its own bf16 cast of the norm output [32, 32] and its bf16 weight [32, 32]
    # (2 layers): what fp32 training would not save
    assert rows["memory.activations.decoder.layers.q_proj".replace("q_proj", "self_attn.q_proj")][
        "measured"
    ] == 2 * (32 * 32 * 2 + 32 * 32 * 2)
