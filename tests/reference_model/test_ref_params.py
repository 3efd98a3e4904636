"""Parameter count of the reference model == estimator.terms.params (total and per module term)."""

from __future__ import annotations

import pytest
from ref_specs import BART, BERT, GPT, LLAMA, T5, VASWANI, VIT, measured_terms, spec

from estimator.terms.params import n_param_tensors, params
from reference_model import build_model

CASES = {
    "gpt": GPT,
    "gpt_untied": {**GPT, "tie_embeddings": False},
    "llama": LLAMA,
    "llama_gqa": {**LLAMA, "n_kv_heads": 2},
    "mqa_geglu_layernorm": dict(arch="decoder", n_kv_heads=1, activation="geglu"),
    "relu_sinusoidal_post": dict(
        arch="decoder", position="sinusoidal", activation="relu", norm_position="post"
    ),
    "none_no_final_norm": dict(arch="decoder", position="none", final_norm=False),
    "head_dim_explicit": dict(arch="decoder", head_dim=12, position="rotary"),
    "relative_decoder": dict(arch="decoder", position="relative"),
    "t5": T5,
    "t5_untied_gqa": {**T5, "tie_embeddings": False, "n_kv_heads": 2},
    "bart": BART,
    "vaswani": VASWANI,
    "bert": BERT,
    "bert_mlm_head": {**BERT, "lm_head": True},
    "encoder_rmsnorm_swiglu": dict(arch="encoder", norm="rmsnorm", activation="swiglu"),
    "vit": VIT,
    "vit_sinusoidal": {**VIT, "position": "sinusoidal"},
}


@pytest.mark.parametrize("name", list(CASES))
def test_params_match_estimator_total_and_terms(name: str) -> None:
    s = spec(**CASES[name])
    model = build_model(s)
    expected = params(s)
    assert sum(p.numel() for p in model.parameters()) == expected.total
    assert measured_terms(model) == expected.terms
    assert len(list(model.parameters())) == n_param_tensors(s)


def test_tied_lm_head_shares_embedding_storage() -> None:
    model = build_model(spec(**GPT))
    assert model.lm_head.weight is model.embed.weight
    assert "lm_head.weight" not in dict(model.named_parameters())
