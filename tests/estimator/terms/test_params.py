"""Parameter counts worked by hand on tiny models, term by term."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from estimator.spec import ModelSpec
from estimator.spec.presets import PRESETS
from estimator.terms.params import n_param_tensors, param_tensor_numels, params


def tiny_gpt(**kw: Any) -> ModelSpec:
    base: dict[str, Any] = dict(
        arch="decoder", n_decoder_layers=1, d_model=4, n_heads=2, d_ff=8, vocab_size=10,
        max_seq_len=6, activation="gelu", norm="layernorm", bias=True, tie_embeddings=True,
    )  # fmt: skip
    return ModelSpec(**{**base, **kw})


def test_tiny_gpt_params_match_hand_count() -> None:
    # V=10, d=4, h=2 (d_h=2), d_ff=8, L=1, max_seq_len=6, LayerNorm, biases, tied lm_head:
    #   embed        10*4          = 40
    #   pos          6*4           = 24
    #   attn_norm    4 + 4         =  8
    #   q/k/v/o      4*4 + 4 each  = 20 x 4 = 80
    #   ffn_norm     4 + 4         =  8
    #   ffn.up       4*8 + 8       = 40
    #   ffn.down     8*4 + 4       = 36
    #   final_norm   4 + 4         =  8
    #   total                      = 244
    b = params(tiny_gpt())
    assert b.unit == "params"
    assert b.terms == {
        "embed": 40,
        "decoder.pos": 24,
        "decoder.layers.attn_norm": 8,
        "decoder.layers.self_attn.q_proj": 20,
        "decoder.layers.self_attn.k_proj": 20,
        "decoder.layers.self_attn.v_proj": 20,
        "decoder.layers.self_attn.o_proj": 20,
        "decoder.layers.ffn_norm": 8,
        "decoder.layers.ffn.up": 40,
        "decoder.layers.ffn.down": 36,
        "decoder.final_norm": 8,
    }
    assert b.total == 244
    # tensors: embed, pos, 2 per norm (3 norms), 2 per linear (6 linears) = 2 + 6 + 12
    assert n_param_tensors(tiny_gpt()) == 20


def test_untied_lm_head_adds_v_times_d_without_bias() -> None:
    tied, untied = params(tiny_gpt()), params(tiny_gpt(tie_embeddings=False))
    assert "lm_head" not in tied.terms
    assert untied.terms["lm_head"] == 10 * 4  # nn.Linear(d, V, bias=False)
    assert untied.total == tied.total + 40
    assert n_param_tensors(tiny_gpt(tie_embeddings=False)) == 21


def test_per_layer_terms_scale_with_layer_count_and_stack_terms_do_not() -> None:
    one, three = params(tiny_gpt()).terms, params(tiny_gpt(n_decoder_layers=3)).terms
    for name, n in one.items():
        assert three[name] == (3 * n if ".layers." in name else n), name


@pytest.mark.parametrize(("n_kv_heads", "kv_numel"), [(4, 8 * 8), (2, 8 * 4), (1, 8 * 2)])
def test_mha_gqa_mqa_key_value_projections_match_hand_count(n_kv_heads: int, kv_numel: int) -> None:
    # d=8, h=4, d_h=2, no bias: q and o are 8 x (4*2) whatever h_kv; k and v are 8 x (h_kv*2).
    spec = tiny_gpt(d_model=8, n_heads=4, n_kv_heads=n_kv_heads, bias=False)
    t = params(spec).terms
    assert t["decoder.layers.self_attn.q_proj"] == 64
    assert t["decoder.layers.self_attn.o_proj"] == 64
    assert t["decoder.layers.self_attn.k_proj"] == kv_numel
    assert t["decoder.layers.self_attn.v_proj"] == kv_numel


def test_explicit_head_dim_sizes_projections_by_h_times_d_h() -> None:
    # d=4, h=2, d_h=3 (h*d_h=6 != d): q is 4 -> 6 (+6 bias), o is 6 -> 4 (+4 bias)
    t = params(tiny_gpt(head_dim=3)).terms
    assert t["decoder.layers.self_attn.q_proj"] == 4 * 6 + 6
    assert t["decoder.layers.self_attn.o_proj"] == 6 * 4 + 4


def test_gated_ffn_with_rmsnorm_matches_hand_count() -> None:
    # swiglu, d=4, d_ff=6, no bias, RMSNorm (weight only), rotary (no table):
    #   up 4*6=24, gate 4*6=24, down 6*4=24; each norm 4
    spec = tiny_gpt(activation="swiglu", d_ff=6, bias=False, norm="rmsnorm", position="rotary")
    t = params(spec).terms
    assert (t["decoder.layers.ffn.up"], t["decoder.layers.ffn.gate"]) == (24, 24)
    assert t["decoder.layers.ffn.down"] == 24
    assert t["decoder.layers.attn_norm"] == t["decoder.final_norm"] == 4
    assert "decoder.pos" not in t
    assert "decoder.layers.ffn.gate" not in params(tiny_gpt()).terms  # plain gelu: no gate


@pytest.mark.parametrize("position", ["sinusoidal", "rotary", "none"])
def test_positions_without_parameters_have_no_term(position: str) -> None:
    assert not any(k.endswith(".pos") for k in params(tiny_gpt(position=position)).terms)


def test_encoder_decoder_terms_match_hand_count() -> None:
    # d=4, h=2, d_ff=8, 1+1 layers, RMSNorm, no bias, relative positions (3 buckets), tied:
    #   embed 10*4=40 (shared by both stacks); pos: Embedding(3, h=2) = 6 per stack
    #   each self/cross projection 4*4=16; up 4*8=32, down 8*4=32; each norm 4
    spec = ModelSpec(
        arch="encoder-decoder", n_encoder_layers=1, n_decoder_layers=1, d_model=4, n_heads=2,
        d_ff=8, vocab_size=10, max_seq_len=6, activation="relu", norm="rmsnorm", bias=False,
        position="relative", relative_buckets=3,
    )  # fmt: skip
    t = params(spec).terms
    assert t["embed"] == 40
    assert t["encoder.pos"] == t["decoder.pos"] == 6
    assert t["decoder.layers.cross_attn.k_proj"] == 16
    assert t["decoder.layers.cross_norm"] == 4
    assert not any("cross" in k for k in t if k.startswith("encoder."))
    # encoder: 6 + 4 + 64 + 4 + 64 + 4 = 146; decoder: 146 + 4 + 64 = 214
    assert params(spec).group("encoder") == 146
    assert params(spec).group("decoder") == 214
    assert params(spec).total == 40 + 146 + 214


def test_bert_style_and_vit_style_input_terms_match_hand_count() -> None:
    bert = ModelSpec(
        arch="encoder", n_encoder_layers=1, d_model=4, n_heads=2, d_ff=8, vocab_size=10,
        max_seq_len=6, n_token_types=2, embed_norm=True, pooler=True, final_norm=False,
    )  # fmt: skip
    t = params(bert).terms
    assert (t["encoder.token_type"], t["encoder.embed_norm"], t["pooler.proj"]) == (8, 8, 20)
    assert "lm_head" not in t and "encoder.final_norm" not in t
    # ViT: image 8, patch 4 -> 4 patches + class token = 5 positions; 3 channels, d=4
    vit = ModelSpec(
        arch="encoder", n_encoder_layers=1, d_model=4, n_heads=2, d_ff=8, max_seq_len=5,
        image_size=8, patch_size=4, n_channels=3,
    )  # fmt: skip
    t = params(vit).terms
    assert t["encoder.patch"] == 4  # class token [1, 1, d]
    assert t["encoder.patch.proj"] == 4 * 3 * 4 * 4 + 4  # Conv2d(3, 4, 4, stride=4)
    assert t["encoder.pos"] == 5 * 4
    assert "embed" not in t


def test_learned_position_offset_adds_rows_per_stack() -> None:
    t = params(tiny_gpt(position_offset=2)).terms
    assert t["decoder.pos"] == (6 + 2) * 4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tensor_numels_sum_to_total_for_every_preset(name: str) -> None:
    spec = PRESETS[name]
    numels = param_tensor_numels(spec)
    assert sum(numels) == params(spec).total
    assert len(numels) == n_param_tensors(spec)
    assert all(n > 0 for n in params(spec).terms.values())


def test_importing_estimator_params_presets_hf_config_never_imports_torch() -> None:
    code = (
        "import sys, estimator.terms.params, estimator.spec.presets, estimator.spec.hf_config;"
        "bad = {'torch', 'transformers', 'fvcore'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
