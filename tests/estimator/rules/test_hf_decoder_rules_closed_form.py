"""The decoder-only HF rules (estimator/rules/hf/decoders.py, estimator/rules/hf/decoders_pass.py)
as closed forms, without torch; their measured twins: tests/tgauge/test_hf_rules_decoders.py."""

from __future__ import annotations

from hf_tiny import CONFIGS

from estimator import estimate
from estimator.rules.registry import overrides
from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload
from estimator.terms.kv_cache import kv_cache_growth_bytes

KINDS = ("saved.ffn.act", "saved.sdpa", "saved.rotary.layer", "saved.rotary.stack",
         "kv.positions", "backward.ffn.act", "live.loss_moment", "replay.pass", "replay.step",
         "replay.ffn.act")  # fmt: skip


def test_hf_lists_the_decoder_rules() -> None:
    assert set(KINDS) <= set(overrides("hf"))


def test_hf_window_cache_holds_the_whole_prefill_until_the_first_step() -> None:
    # DynamicSlidingWindowLayer keeps a view of torch.cat(past, new): prompt 32, window 8
    spec = ModelSpec.from_hf_config(CONFIGS["mistral"])
    w = Workload(mode="decode", batch_size=2, seq_len=32, new_tokens=3)
    per_pos = 2 * spec.n_decoder_layers * 2 * spec.n_kv_heads * spec.head_dim * 4  # k, v fp32
    assert kv_cache_growth_bytes(spec, resolve(spec, w)) == [
        32 * per_pos,
        8 * per_pos,
        8 * per_pos,
        8 * per_pos,
    ]
    reference = spec.model_copy(update={"implementation": "reference"})
    assert kv_cache_growth_bytes(reference, resolve(reference, w)) == [8 * per_pos] * 4


def test_gpt2_sdpa_saves_the_cache_copies_only_when_a_cache_is_built() -> None:
    # c_attn's output [n, 3d] stays with q; DynamicCache's cat copies of k and v are extra
    spec = ModelSpec.from_hf_config(CONFIGS["gpt2"])
    w = Workload(batch_size=2, seq_len=32, attention_impl="fused")

    def sdpa(workload: Workload) -> int:
        return estimate(spec, workload).memory.terms["activations.decoder.layers.self_attn.sdpa"]

    n, d, L = 2 * 32, spec.d_model, spec.n_decoder_layers
    assert sdpa(w) - sdpa(w.model_copy(update={"use_cache": False})) == L * 2 * n * d * 4


def test_gpt2_fused_qkv_is_one_parameter_pair_per_layer() -> None:
    # GPT2Attention.c_attn: one weight and one bias per layer (adam's step counts per tensor)
    spec = ModelSpec.from_hf_config(CONFIGS["gpt2"])
    split = spec.model_copy(update={"fused_qkv": False})
    w = Workload(batch_size=2, seq_len=32)
    step = "optimizer.step"
    diff = estimate(split, w).memory.terms[step] - estimate(spec, w).memory.terms[step]
    assert diff == spec.n_decoder_layers * 4 * 4  # 4 fewer 0-dim fp32 step tensors a layer
