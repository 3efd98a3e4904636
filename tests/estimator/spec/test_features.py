"""The issue-22 spec fields: defaults keep the behaviour before them, cross-field checks name
the field, and a spec using them is refused for memory by name (rule ``unmodelled``)."""

import pytest

from estimator.estimate import estimate
from estimator.spec import ModelSpec, UnsupportedError, Workload
from estimator.spec.features import features
from estimator.terms.params import params

BASE = dict(arch="decoder", n_layers=2, d_model=16, n_heads=4, d_ff=32, vocab_size=50,
            max_seq_len=64, activation="swiglu", norm="rmsnorm", position="rotary")  # fmt: skip


def spec(**kw) -> ModelSpec:
    return ModelSpec(**{**BASE, **kw})


def test_defaults_are_the_behaviour_before_issue_22():
    s = spec()
    assert (s.qkv_bias, s.o_bias, s.ffn_bias) == (True, True, True) and features(s) == []
    assert spec(bias=False).qkv_bias is False


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"n_experts": 4}, "n_experts_per_token"),
        ({"n_experts": 4, "n_experts_per_token": 5}, "n_experts_per_token"),
        ({"n_experts_per_token": 2}, "n_experts_per_token"),
        ({"n_experts": 4, "n_experts_per_token": 2, "dense_layers": (2,)}, "dense_layers"),
        ({"kv_lora_rank": 8}, "qk_rope_head_dim"),
        (
            {"kv_lora_rank": 8, "qk_rope_head_dim": 2, "qk_nope_head_dim": 4, "v_head_dim": 4},
            "head_dim",
        ),
        ({"q_lora_rank": 8}, "q_lora_rank"),
        ({"layer_pattern": ("full",)}, "layer_pattern"),
        ({"layer_pattern": ("full", "sliding")}, "layer_pattern"),
        ({"rotary_dim": 3}, "rotary_dim"),
        ({"parallel_block": "one_norm", "sublayer_norm": "sandwich"}, "parallel_block"),
        ({"fused_gate_up": True, "activation": "gelu"}, "fused_gate_up"),
    ],
)
def test_cross_field_checks_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"{field}=.* is invalid"):  # pydantic wraps SpecError
        spec(**kw)


def test_moe_counts_every_expert_and_refuses_unbuilt_options_by_name():
    dense = spec(bias=False)
    moe = spec(bias=False, n_experts=4, n_experts_per_token=2, dense_layers=(0,))
    # one MoE layer: router d*E, 4 experts of 3 d d_ff instead of one dense FFN of 3 d d_ff
    assert params(moe).total - params(dense).total == 16 * 4 + 3 * (3 * 16 * 32)
    w = Workload(batch_size=1, seq_len=8, mode="train")
    # issue 22e: the reference model's MoE is modelled (tests/reference_model/test_ref_moe.py)
    assert estimate(moe, w).memory.terms["activations.decoder.layers.ffn.router"] > 0
    with pytest.raises(UnsupportedError, match="router_fp32=True"):
        estimate(spec(bias=False, n_experts=4, n_experts_per_token=2, router_fp32=True), w)


def test_sandwich_and_output_norms_count_their_norms():
    d = BASE["d_model"]
    base = params(spec()).total
    assert params(spec(sublayer_norm="sandwich")).total == base + 2 * 2 * d  # 2 per layer
    assert params(spec(sublayer_norm="output")).total == base
    assert params(spec(parallel_block="one_norm")).total == base - 2 * d  # no ffn_norm
