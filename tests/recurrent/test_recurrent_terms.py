"""Recurrent models without torch: published parameter counts, the state, the sequential
depth, Table 1, the Transformer comparison and the CLI (`estimate elmo`, `compare`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from estimator.plan.compare import compare, recurrent_estimate, recurrent_step_time
from estimator.plan.hardware import get_gpu
from estimator.spec.errors import SpecError
from estimator.spec.recurrent import RECURRENT_PRESETS, RecurrentSpec, get_recurrent_preset
from estimator.terms.recurrent import (
    TABLE1,
    recurrent_forward_flops,
    recurrent_params,
    recurrent_state_bytes,
    sequential_steps,
    table1_numbers,
)
from tgauge.cli import app

runner = CliRunner()


def test_elmo_published_count():
    """AllenNLP's Original ELMo: 93.6M (Peters et al. 2018), the softmax left out."""
    n = recurrent_params(get_recurrent_preset("elmo")).total
    assert n == 93_600_864
    assert round(n / 1e6, 1) == 93.6


def test_elmo_components_by_hand():
    p = recurrent_params(RECURRENT_PRESETS["elmo"]).terms
    assert (
        p["char_cnn.conv"]
        == 16 * (32 + 2 * 32 + 3 * 64 + 4 * 128 + 5 * 256 + 6 * 512 + 7 * 1024) + 2048
    )
    assert p["char_cnn.highway"] == 2 * (2048 * 4096 + 4096)
    # one stack per direction, each: input + recurrent + projection, one bias per cell
    per_stack = 2 * (4 * 4096 * 512 + 4 * 4096 * 512 + 4 * 4096 + 4096 * 512)
    assert sum(v for k, v in p.items() if k.startswith("rnn_fwd.")) == per_stack
    assert sum(v for k, v in p.items() if k.startswith("rnn_bwd.")) == per_stack


def test_seq2seq_published_count():
    """Sutskever et al. 2014: 384M parameters."""
    n = recurrent_params(RECURRENT_PRESETS["lstm-seq2seq"]).total
    assert round(n / 1e6) == 384


def test_state_is_constant_in_length_and_kv_grows():
    spec = RECURRENT_PRESETS["elmo"]
    # h (P = 512) and c (H = 4096) per layer and direction
    assert recurrent_state_bytes(spec, 8, 4) == 8 * 2 * 2 * (512 + 4096) * 4
    rows = compare(["elmo", "gpt2-small"], [128, 512], 2, get_gpu("a100-80gb")).rows
    elmo = [r.state_bytes for r in rows if r.name == "elmo"]
    gpt = [r.state_bytes for r in rows if r.name == "gpt2-small"]
    assert elmo[0] == elmo[1] and gpt[1] == 4 * gpt[0]


def test_sequential_steps_recurrent_vs_attention():
    spec = RECURRENT_PRESETS["elmo"]
    assert sequential_steps(spec, 300) == {"per_layer": 300, "stack": 600}
    rows = compare(["elmo", "bert-base"], [64, 256], 1, get_gpu("a100-80gb")).rows
    assert {r.sequential_steps for r in rows if r.name == "bert-base"} == {12}
    assert [r.sequential_steps for r in rows if r.name == "elmo"] == [128, 512]


def test_table1_orders_and_numbers():
    assert TABLE1["recurrent"] == {"complexity": "n d^2", "sequential": "n", "path": "n"}
    assert TABLE1["self-attention"]["sequential"] == "1"
    at = table1_numbers(1024, 512, k=4, r=128)
    assert at["self-attention"]["complexity"] == 1024**2 * 512
    assert at["recurrent"]["complexity"] == 1024 * 512**2
    assert at["convolutional"]["path"] == 5  # log_4(1024)
    assert at["self-attention (restricted)"]["path"] == 8  # 1024 / 128
    # attention is cheaper than recurrence while n < d
    assert (
        table1_numbers(256, 512)["self-attention"]["complexity"]
        < (table1_numbers(256, 512)["recurrent"]["complexity"])
    )


def test_flops_are_twice_the_matmul_weights_per_token():
    spec = RecurrentSpec(n_layers=3, hidden=40, vocab=10, d_embed=8, bidirectional="concat")
    weights = sum(v for k, v in recurrent_params(spec).terms.items() if "weight" in k)
    assert recurrent_forward_flops(spec, 5, 7).terms["rnn"] == 2 * 5 * 7 * weights


def test_recurrent_time_respects_the_dependency():
    """T dependent steps: doubling T doubles the step time; a wider batch at small b is
    nearly free (each step is bound by reading the recurrent weights)."""
    gpu, spec = get_gpu("h100-sxm"), RECURRENT_PRESETS["elmo"]
    t1, bound = recurrent_step_time(spec, 1, 256, gpu)
    t2, _ = recurrent_step_time(spec, 1, 512, gpu)
    t8, _ = recurrent_step_time(spec, 8, 256, gpu)
    assert bound == "memory"
    assert t2 == pytest.approx(2 * t1, rel=0.05)
    assert t8 < 1.5 * t1


def test_context_limit_skipped_by_name():
    result = compare(["gpt2-small"], [512, 2048], 1, get_gpu("a100-80gb"))
    assert [r.seq_len for r in result.rows] == [512]
    assert result.skipped == [("gpt2-small", 2048, "past its context of 1024 tokens")]


def test_unknown_model_refused_by_name():
    with pytest.raises(SpecError, match="elmo-big.*neither a recurrent preset"):
        compare(["elmo-big"], [64], 1, get_gpu("a100-80gb"))
    with pytest.raises(SpecError, match="recurrent preset='nope' is unknown"):
        get_recurrent_preset("nope")


def test_spec_refuses_what_torch_has_not():
    with pytest.raises(ValueError, match="proj_size needs an LSTM"):
        RecurrentSpec(cell="gru", n_layers=1, hidden=8, proj_size=4, vocab=5, d_embed=4)
    with pytest.raises(ValueError, match="seq2seq needs tgt_vocab"):
        RecurrentSpec(kind="seq2seq", n_layers=1, hidden=8, vocab=5, d_embed=4)


def test_estimate_terms_add_up():
    est = recurrent_estimate(RECURRENT_PRESETS["elmo"], 4, 100, 4, "adamw")
    w = 93_600_864 * 4
    assert est.memory.terms["weights"] == w == est.memory.terms["optimizer.exp_avg_sq"]
    assert est.train_flops == 3 * est.forward_flops.total
    with pytest.raises(SpecError, match="optimizer='adafactor' is not modelled"):
        recurrent_estimate(RECURRENT_PRESETS["elmo"], 1, 8, 4, "adafactor")


def test_cli_estimate_elmo():
    r = runner.invoke(app, ["estimate", "elmo", "-b", "2", "-s", "64"])
    assert r.exit_code == 0, r.output
    assert "93,600,864" in r.output and "93.6M" in r.output
    r = runner.invoke(app, ["estimate", "elmo", "-b", "2", "-s", "64", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["params"]["total"] == 93_600_864 and data["sequential_steps"] == 128
    r = runner.invoke(app, ["estimate", "elmo", "--mode", "decode"])
    assert r.exit_code == 2 and "not modelled for recurrent models" in r.output


def test_cli_compare_json_and_chart(tmp_path):
    r = runner.invoke(app, ["compare", "elmo,gpt2-small,bert-base", "-s", "64,128", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {row["name"] for row in data["rows"]} == {"elmo", "gpt2-small", "bert-base"}
    assert data["table1"]["symbolic"]["recurrent"]["sequential"] == "n"
    pytest.importorskip("matplotlib")
    png = tmp_path / "cmp.png"
    r = runner.invoke(app, ["compare", "-s", "32,64", "--chart", str(png)])
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 10_000
    assert "Table 1" in r.output and "O(n^2 d)" in r.output


@pytest.mark.parametrize("args", [["compare", "-s", "0"], ["compare", "-s", "a,b"], ["compare", ""],
                                  ["compare", "nope"]])  # fmt: skip
def test_cli_compare_bad_input_one_line(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
