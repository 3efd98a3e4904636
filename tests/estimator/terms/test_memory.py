"""Memory terms: a tiny spec by hand, optimizer states, peak phases."""

from __future__ import annotations

from estimator.estimate import estimate
from estimator.spec import ModelSpec, Workload
from estimator.spec.presets import get_preset
from estimator.terms.params import n_param_tensors, params

# d=8, h=2, d_h=4, d_ff=16, V=10, 1 layer, LayerNorm, gelu, learned positions
TINY = ModelSpec(arch="decoder", n_decoder_layers=1, d_model=8, n_heads=2, d_ff=16,
                 vocab_size=10, max_seq_len=64)  # fmt: skip


def test_tiny_activations_match_hand_count():
    # b=2, s=3 -> n=6, fp32 (4 bytes), h=2, d_h=4
    m = estimate(TINY, Workload(mode="train", batch_size=2, seq_len=3)).memory.terms
    norm = 6 * 8 * 4 + 2 * 6 * 4  # input [6,8] + mean, rstd [6] fp32
    assert m["activations.embed"] == 6 * 8  # int64 ids [2,3]
    assert m["activations.decoder.pos"] == 3 * 8  # int64 position ids [3]
    assert m["activations.decoder.layers.attn_norm"] == norm
    assert m["activations.decoder.layers.self_attn.q_proj"] == 6 * 8 * 4
    assert "activations.decoder.layers.self_attn.k_proj" not in m  # same storage as q_proj's
    # Q, K [2,2,3,4] + softmax [2,2,3,3] fp32 + causal bool mask [3,3] (masked_fill(~ok))
    assert m["activations.decoder.layers.self_attn.scores"] == (2 * 48 + 36) * 4 + 9
    assert m["activations.decoder.layers.self_attn.mix"] == 48 * 4  # V
    assert m["activations.decoder.layers.ffn.act"] == 6 * 16 * 4  # gelu input
    assert m["activations.decoder.layers.ffn.down"] == 6 * 16 * 4  # gelu output
    assert m["activations.loss"] == 6 * 10 * 4 + 6 * 8 + 4  # log-softmax, targets, weight


def test_dropout_adds_bool_masks_and_the_dropped_probabilities():
    base = estimate(TINY, Workload(mode="train", batch_size=2, seq_len=3)).memory.terms
    drop = estimate(TINY, Workload(mode="train", batch_size=2, seq_len=3, dropout=0.1)).memory.terms
    probs = 2 * 2 * 3 * 3  # b h s s
    k = "activations.decoder.layers.self_attn."
    assert drop[k + "scores.dropout"] == probs  # bool mask (CUDA native_dropout)
    assert drop[k + "mix"] - base[k + "mix"] == probs * 4  # dropout output, fp32
    assert drop["activations.decoder.layers.dropout"] == 2 * 6 * 8  # 2 residual masks
    assert drop["activations.decoder.dropout"] == 6 * 8  # embedding dropout mask


def test_adamw_states_and_step_tensors_follow_torch():
    spec = get_preset("gpt2-small")
    m = estimate(spec, Workload(mode="train", seq_len=16)).memory.terms
    n = params(spec).total
    assert m["weights"] == m["gradients"] == m["optimizer.exp_avg"] == 4 * n
    assert m["optimizer.step"] == 4 * n_param_tensors(spec)  # one fp32 0-dim step each


def test_master_weights_keep_fp32_states_and_copy():
    spec = get_preset("gpt2-small")
    m = estimate(
        spec, Workload(mode="train", seq_len=16, dtype="bf16", master_weights=True)
    ).memory.terms
    n = params(spec).total
    assert m["weights"] == m["gradients"] == 2 * n
    assert m["optimizer.exp_avg"] == m["optimizer.master_weights"] == 4 * n


def test_int4_weights_pack_two_per_byte():
    spec = get_preset("llama-2-7b")
    m = estimate(spec, Workload(mode="prefill", seq_len=16, dtype="int4")).memory.terms
    assert m["weights"] * 2 >= params(spec).total  # ceil per tensor
    assert m["weights"] * 2 - params(spec).total < 2 * 400  # at most 1 byte per tensor


def test_checkpointing_keeps_only_layer_inputs():
    spec = get_preset("gpt2-small")
    m = estimate(spec, Workload(mode="train", seq_len=64, checkpointing="full")).memory.terms
    assert m["activations.decoder"] == 12 * 64 * 768 * 4  # saved by the Stack's checkpoint
    assert not any(k.startswith("activations.decoder.layers.") for k in m)


def test_peak_phases():
    spec = get_preset("gpt2-small")
    assert (
        estimate(spec, Workload(mode="train", batch_size=8, seq_len=1024)).peak_phase == "backward"
    )
    # tiny batch: gradients outweigh activations, and the tied embedding's two [V, d]
    # gradients and their sum at the end of backward make backward the peak (measured, fused
    # AdamW); torch's default on cuda, foreach, adds a whole exp_avg_sq in the step
    tiny = Workload(mode="train", seq_len=8, optimizer_impl="fused")
    assert estimate(spec, tiny).peak_phase == "backward"
    foreach = tiny.model_copy(update={"optimizer_impl": "foreach"})
    assert estimate(spec, foreach).peak_phase == "optimizer_step"
    w = Workload(mode="decode", prompt_len=16, new_tokens=4, dtype="fp16")
    est = estimate(get_preset("llama-2-7b"), w)
    peak, phase = est.peak_memory_bytes, est.peak_phase
    assert (
        phase in ("prefill", "decode") and peak > estimate(get_preset("llama-2-7b"), w).memory.total
    )
