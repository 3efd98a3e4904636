"""FLOPs: a tiny spec counted by hand, conventions, decode with and without cache."""

from __future__ import annotations

import random

import pytest

from estimator.estimate import estimate
from estimator.shapes import attention_pairs, resolve
from estimator.spec import ModelSpec, Workload
from estimator.spec.presets import get_preset
from estimator.terms.flops import STEPWISE_UP_TO, decode_steps
from estimator.terms.params import params

# d=8, h=2, d_h=4, d_ff=16, V=10, one layer, untied head, no gate
TINY = ModelSpec(arch="decoder", n_decoder_layers=1, d_model=8, n_heads=2, d_ff=16,
                 vocab_size=10, max_seq_len=64, tie_embeddings=False)  # fmt: skip


def test_tiny_forward_matches_hand_count():
    # b=2, s=3 -> n=6 tokens
    f = estimate(TINY, Workload(mode="prefill", batch_size=2, seq_len=3)).flops.terms
    assert f["forward.decoder.layers.self_attn.q_proj"] == 2 * 6 * 8 * 8  # [6,8]@[8,8]
    assert f["forward.decoder.layers.self_attn.scores"] == 2 * 2 * 2 * 3 * 3 * 4  # b h s s d_h
    assert f["forward.decoder.layers.self_attn.mix"] == 2 * 2 * 2 * 3 * 3 * 4
    assert f["forward.decoder.layers.ffn.up"] == 2 * 6 * 8 * 16
    assert f["forward.decoder.layers.ffn.down"] == 2 * 6 * 16 * 8
    assert f["forward.lm_head"] == 2 * 6 * 8 * 10
    assert not any(k.startswith("backward.") for k in f)


def test_backward_is_twice_forward_for_linears_and_eager_attention():
    f = estimate(TINY, Workload(mode="train", batch_size=2, seq_len=3)).flops.terms
    for name, fwd in f.items():
        if name.startswith("forward."):
            assert f["backward." + name.removeprefix("forward.")] == 2 * fwd


def test_fused_sdpa_counts_two_matmuls_forward_five_backward():
    # FlopCounterMode: sdpa_flop_count = 2 bmm; sdpa_backward_flop_count = 5 bmm
    f = estimate(
        TINY, Workload(mode="train", batch_size=2, seq_len=3, attention_impl="fused")
    ).flops.terms
    one = 2 * 2 * 2 * 3 * 3 * 4
    assert f["forward.decoder.layers.self_attn.sdpa"] == 2 * one
    assert f["backward.decoder.layers.self_attn.sdpa"] == 5 * one


def test_vit_patch_conv_backward_is_weight_grad_only():
    spec = get_preset("vit-b-16")
    f = estimate(spec, Workload(mode="train", seq_len=197)).flops.terms
    conv = 2 * 196 * 768 * 3 * 16 * 16  # b * patches * d * c * p * p, 2 per MAC
    assert f["forward.encoder.patch.proj"] == conv == f["backward.encoder.patch.proj"]


def test_triangle_counts_unmasked_pairs():
    assert attention_pairs("causal", None, True, 4, "triangle") == 10  # 4*5/2
    assert attention_pairs("causal", None, True, 4, "full") == 16
    # causal window 2 over 4 tokens: rows see 1, 2, 2, 2 keys
    assert attention_pairs("sliding_window", 2, True, 4, "triangle") == 7
    # bidirectional window 2 (|i-j| < 2) over 4 tokens: 4 + 2*3 = 10
    assert attention_pairs("sliding_window", 2, False, 4, "triangle") == 10
    # chunks of 3 over 7 tokens: 3, 3, 1 real tokens; the last chunk is padded to 3 and
    # computed in full -> 9 + 9 + 9; only the causal triangle of real pairs: 6 + 6 + 1
    assert attention_pairs("chunked", 3, True, 7, "full") == 27
    assert attention_pairs("chunked", 3, True, 7, "triangle") == 13


def test_checkpointing_recomputes_each_layer_forward():
    w = Workload(mode="train", batch_size=2, seq_len=3, checkpointing="full")
    f = estimate(TINY, w).flops.terms
    assert f["recompute.decoder.layers.ffn.up"] == f["forward.decoder.layers.ffn.up"]
    assert "recompute.lm_head" not in f


def test_training_flops_near_6n_per_token_kaplan():
    # Kaplan et al. 2020 eq. 2.2: C ~ 6 N per token (+ attention); matmul params only
    spec = get_preset("llama-2-7b")
    w = Workload(mode="train", seq_len=128)
    total = estimate(spec, w).flops.total
    n_matmul = params(spec).total - params(spec).terms["embed"]
    assert 6 * n_matmul * 128 <= total <= 6 * n_matmul * 128 * 1.05


def test_decode_with_cache_step_by_hand_and_totals():
    w = Workload(mode="decode", batch_size=1, seq_len=3, prompt_len=3, new_tokens=2)
    dec = estimate(TINY, w).decode
    # step 1: one token, 4 cached positions
    proj = 4 * 2 * 8 * 8 + 2 * 2 * 8 * 16  # q, k, v, o + up, down
    attn = 2 * (2 * 2 * 4 * 4)  # scores + mix: 2 b h T d_h with T=4
    assert dec.per_step_flops[0] == proj + attn + 2 * 8 * 10
    assert (
        dec.prefill_flops
        == estimate(TINY, w.model_copy(update={"mode": "prefill", "seq_len": 3})).flops.total
    )
    assert dec.total_with_cache_flops == estimate(TINY, w).flops.total
    full4 = estimate(TINY, Workload(mode="prefill", seq_len=4)).flops.total
    assert dec.per_step_flops_without_cache[0] == full4
    assert dec.total_without_cache_flops > dec.total_with_cache_flops


def _decode_cases() -> list[tuple[ModelSpec, Workload]]:
    """Seeded decode runs over patterns, windows, FLOP conventions, caches and both decoder
    architectures, with step counts past the step-by-step threshold."""
    rng = random.Random(11)
    specs = [
        TINY,
        get_preset("t5-small"),
        ModelSpec(arch="decoder", n_decoder_layers=2, d_model=16, n_heads=4, n_kv_heads=2,
                  d_ff=32, vocab_size=50, max_seq_len=4096, position="rotary",
                  activation="swiglu", norm="rmsnorm"),
    ]  # fmt: skip
    out = []
    for _ in range(40):
        spec = rng.choice(specs)
        f = {"mode": "decode", "batch_size": rng.choice([1, 3]), "seq_len": 8,
             "new_tokens": rng.choice([1, STEPWISE_UP_TO, STEPWISE_UP_TO + 1, 97, 300]),
             "attention_impl": rng.choice(["eager", "fused"]), "kv_cache": rng.random() < 0.7,
             "causal_flops": rng.choice(["full", "triangle"])}  # fmt: skip
        if spec.arch == "decoder":
            f["prompt_len"] = rng.choice([1, 5, 40])
            if rng.random() < 0.5:
                f["attention_pattern"] = rng.choice(["sliding_window", "chunked"])
                f["window"] = rng.choice([3, 16])
        out.append((spec, Workload(**f)))
    return out


@pytest.mark.parametrize(("spec", "w"), _decode_cases())
def test_decode_steps_closed_form_equals_step_by_step(spec, w) -> None:
    sh = resolve(spec, w)
    for cache in (True, False):
        terms, per_step = decode_steps(spec, sh, cache)
        want_terms, want_steps = decode_steps(spec, sh, cache, stepwise=True)
        assert terms == want_terms
        assert list(per_step) == want_steps
