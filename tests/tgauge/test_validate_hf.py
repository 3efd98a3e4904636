"""`tgauge validate CONFIG.json --hf`: the real transformers model of all seven families in
train, prefill and decode, rows mapped onto glossary terms, nothing dropped (issue 9)."""

import json

import pytest
from typer.testing import CliRunner

from estimator.spec import ModelSpec, Workload

pytest.importorskip("transformers")
from hf_tiny import CONFIGS, DECODERS, FAMILIES  # noqa: E402

from tgauge.hf_terms import map_terms  # noqa: E402
from tgauge.validate import validate_point  # noqa: E402

# the classes of tests/hf_tiny.py, all modelled (ViTForImageClassification: its classifier)
MODELLED = CONFIGS
SEQ = {"vit": 17}  # 32 / 8 = 4 x 4 patches + the class token


def point(family: str, config: dict | None = None, **workload):
    config = config or MODELLED[family]
    w = Workload(batch_size=2, seq_len=SEQ.get(family, 16), **workload)
    return validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)


def rows_of(p, prefix: str) -> dict:
    return {r.term: r for r in p.rows if r.term.startswith(prefix)}


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_train_params_per_term_and_eager_flops_match_the_real_model(family):
    p = point(family)
    assert p.status == "ok", p.notes
    params, flops = rows_of(p, "params."), rows_of(p, "flops.")
    assert params and all(r.verdict == "exact" for r in params.values()), params
    assert {"flops.forward.total", "flops.backward.total"} <= set(flops)
    assert all(r.verdict == "exact" for r in flops.values()), flops
    assert not any(t.startswith("params.hf:") for t in params)  # every module has a term
    acts = rows_of(p, "memory.activations.")
    assert acts["memory.activations.total"].measured > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_prefill_params_exact_and_peak_measured(family):
    p = point(family, mode="prefill")
    assert p.status == "ok", p.notes
    assert all(r.verdict == "exact" for r in rows_of(p, "params.").values())
    peak = rows_of(p, "peak_memory")["peak_memory"]
    assert peak.measured > 0 and p.peak_phase_measured == "prefill"


@pytest.mark.parametrize("family", DECODERS)
def test_hf_kv_cache_matches_estimate_after_prefill_and_every_step(family):
    p = point(family, mode="decode", prompt_len=4, new_tokens=3)  # prompt + steps < window
    assert p.status == "ok", p.notes
    cache = rows_of(p, "kv_cache.after_step.")
    assert len(cache) == 4 and all(r.verdict == "exact" for r in cache.values()), cache


def test_gpt2_gelu_new_saves_four_tensors_as_predicted():
    # issue 9: gelu_new is written out (pow, tanh, mul) and saves 4 [n, d_ff] tensors
    act = rows_of(point("gpt2"), "memory.activations.")["memory.activations.decoder.layers.ffn.act"]
    spec = ModelSpec.from_hf_config(CONFIGS["gpt2"])
    n = 2 * SEQ.get("gpt2", 16)  # b * s tokens
    assert act.measured == act.predicted == 4 * n * spec.d_ff * 4 * spec.n_decoder_layers


def test_unmapped_module_is_shown_under_its_hf_name():
    # ViTForMaskedImageModeling is not modelled (the spec describes ViTModel): its decoder,
    # Conv2d(d, p^2 c, 1), has no glossary term
    config = {**CONFIGS["vit"], "architectures": ["ViTForMaskedImageModeling"],
              "encoder_stride": 8}  # fmt: skip
    p = point("vit", config=config, mode="prefill")
    row = rows_of(p, "params.")["params.hf:decoder"]
    d, out = CONFIGS["vit"]["hidden_size"], 8 * 8 * 3
    assert (row.predicted, row.measured) == (0, d * out + out)


def test_map_terms_keeps_every_measured_value():
    measured = {"transformer.h.attn.c_attn": 3, "transformer.h.new_thing": 5, "(root)": 7}
    predicted = {"decoder.layers.self_attn.q_proj": 1, "decoder.layers.self_attn.k_proj": 1,
                 "decoder.layers.self_attn.v_proj": 1, "decoder.only": 2}  # fmt: skip
    got, want = map_terms("gpt2", "transformer", measured, predicted)
    assert got == {"decoder.layers.self_attn.{q_proj,k_proj,v_proj}": 3,
                   "hf:transformer.h.new_thing": 5, "loss": 7}  # fmt: skip
    assert want == {"decoder.layers.self_attn.{q_proj,k_proj,v_proj}": 3, "decoder.only": 2}
    assert sum(got.values()) == sum(measured.values())


def test_cli_validate_hf_decode_json(tmp_path):
    from tgauge.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["t5"]))
    argv = ["validate", str(path), "--hf", "--mode", "decode", "-s", "8", "--prompt-len", "1",
            "--new-tokens", "2", "--attention", "fused", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    rows = {r["term"]: r for r in json.loads(result.stdout)}
    assert [rows[f"kv_cache.after_step.{t}"]["verdict"] for t in range(3)] == ["exact"] * 3


@pytest.mark.parametrize("mode", ["train", "prefill"])
def test_reference_model_of_the_bert_mlm_spec_is_exact(mode):
    # the spec of BertForMaskedLM (MLM head, no pooler) built as our reference model: the
    # reference matrix stays exact with the new head (params, activations, FLOPs, peak)
    spec = ModelSpec.from_hf_config(CONFIGS["bert"])
    p = validate_point(spec, Workload(mode=mode, batch_size=2, seq_len=16))
    assert p.status == "ok", p.notes
    assert any(r.term.startswith("params.head_transform") for r in p.rows)
    assert [r for r in p.rows if r.verdict != "exact"] == []
    assert p.peak_phase_predicted == p.peak_phase_measured


def test_hf_fused_attention_flops_not_measured_where_flop_counter_has_no_formula():
    p = point("gpt2", attention_impl="fused")  # sdpa: the CPU flash kernel
    flops = rows_of(p, "flops.")
    assert {r.verdict for r in flops.values()} == {"exact", "not measured"}
    assert all("sdpa" in t for t, r in flops.items() if r.verdict == "not measured")
    assert flops["flops.backward.total"].note == "over the measured terms"
