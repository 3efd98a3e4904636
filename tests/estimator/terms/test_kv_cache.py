"""KV cache: hand-worked cases and a published number."""

from __future__ import annotations

from estimator.estimate import estimate
from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload
from estimator.spec.presets import get_preset
from estimator.terms.kv_cache import kv_cache, kv_cache_growth_bytes, kv_cache_max_bytes

TINY = ModelSpec(arch="decoder", n_decoder_layers=2, d_model=8, n_heads=4, n_kv_heads=2,
                 d_ff=16, vocab_size=10, max_seq_len=64, position="rotary")  # fmt: skip


def _cache(spec: ModelSpec, w: Workload) -> dict[str, int]:
    """The KV cache terms of the run (the term function, without the estimate's checks)."""
    return kv_cache(spec, resolve(spec, w))


def test_llama2_7b_fp16_4096_tokens_is_2_gib_per_sequence():
    # 2 (K,V) * 32 layers * 4096 tokens * 32 heads * 128 dims * 2 bytes = 2 GiB
    # (Llama 2, Touvron et al. 2023: 32 layers, 32 heads, d_h 128, 4096 context)
    w = Workload(mode="prefill", seq_len=4096, dtype="fp16")
    assert (
        estimate(get_preset("llama-2-7b"), w).kv_cache.total
        == 2 * 32 * 4096 * 32 * 128 * 2
        == 2**31
    )


def test_gqa_tiny_decode_matches_hand_count():
    # L=2, b=3, T=P+N=5+2=7, h_kv=2, d_h=2, fp32: 2*2*3*7*2*2*4 = 1344 bytes
    w = Workload(mode="decode", batch_size=3, prompt_len=5, new_tokens=2)
    assert _cache(TINY, w) == {"decoder.layers.self_attn": 1344}


def test_window_caps_cached_positions_by_hand():
    # sliding window 4: T = min(7, 4) = 4 -> 2*2*1*4*2*2*2 bytes (fp16) = 128
    w = Workload(mode="decode", prompt_len=5, new_tokens=2, dtype="fp16",
                 attention_pattern="sliding_window", window=4)  # fmt: skip
    assert sum(_cache(TINY, w).values()) == 2 * 2 * 1 * 4 * 2 * 2 * 2


def test_chunk_keeps_current_chunk_and_max_is_full_chunk():
    # chunk 4, P=5, N=2: after the last step 7 tokens seen -> chunk holds (7-1)%4+1 = 3
    w = Workload(mode="decode", prompt_len=5, new_tokens=4, attention_pattern="chunked", window=4)
    per_position = 2 * 2 * 1 * 2 * 2 * 4  # K,V * L * b * h_kv * d_h * fp32
    assert sum(_cache(TINY, w).values()) == ((9 - 1) % 4 + 1) * per_position  # 9 seen -> 1
    assert kv_cache_max_bytes(TINY, resolve(TINY, w)) == 4 * per_position  # 8 seen: a full chunk
    assert kv_cache_growth_bytes(TINY, resolve(TINY, w)) == [
        p * per_position for p in (1, 2, 3, 4, 1)
    ]


def test_cross_cache_for_encoder_decoder_by_hand():
    # t5-small: 6 decoder layers, 8 heads x 64, s_src = 32, P = 1 start token + N = 3
    spec = get_preset("t5-small")
    w = Workload(mode="decode", batch_size=2, seq_len=32, new_tokens=3, dtype="bf16")
    cache = estimate(spec, w).kv_cache.terms
    assert cache["decoder.layers.cross_attn"] == 2 * 6 * 2 * 32 * 8 * 64 * 2
    assert cache["decoder.layers.self_attn"] == 2 * 6 * 2 * 4 * 8 * 64 * 2


def test_no_cache_in_training_or_when_disabled():
    assert _cache(TINY, Workload(mode="train")) == {}
    assert _cache(TINY, Workload(mode="decode", kv_cache=False)) == {}


def test_growth_is_one_position_per_step():
    w = Workload(mode="decode", prompt_len=3, new_tokens=4)
    growth = kv_cache_growth_bytes(TINY, resolve(TINY, w))
    assert [b - a for a, b in zip(growth, growth[1:], strict=False)] == [2 * 2 * 2 * 2 * 4] * 4


def test_textbook_kv_cache_has_no_quadratic_term() -> None:
    # back-of-envelope KV cache: 2 (K, V) x b x L x T x d x bytes (Pope et al. 2022, sec. 2);
    # doubling T doubles it (no T^2 term)
    from estimator.terms.textbook import textbook_cache_bytes

    spec = get_preset("llama-2-7b")  # L = 32, d = 4096
    w = Workload(mode="decode", dtype="fp16", prompt_len=1000, new_tokens=24)
    assert textbook_cache_bytes(spec, resolve(spec, w)) == 2 * 1 * 32 * 1024 * 4096 * 2
    w2 = w.model_copy(update={"prompt_len": 2024})
    assert textbook_cache_bytes(spec, resolve(spec, w2)) == 2 * textbook_cache_bytes(
        spec, resolve(spec, w)
    )
