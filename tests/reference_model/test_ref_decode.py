"""KV-cache decoding == full forward at every step (logits and greedy tokens)."""

from __future__ import annotations

import pytest
import torch
from ref_specs import DECODERS, LLAMA, spec

from estimator.spec import Workload
from reference_model import build_model

CASES = {
    **{name: (kw, None) for name, kw in DECODERS.items()},
    "chunked_rotary": (LLAMA, Workload(attention_pattern="chunked", window=4)),
    "chunked_relative": (
        DECODERS["relative_decoder"],
        Workload(attention_pattern="chunked", window=3),
    ),
    "window_learned_fused": (
        DECODERS["gpt"],
        Workload(attention_pattern="sliding_window", window=4, attention_impl="fused"),
    ),
    "t5_fused": (DECODERS["t5"], Workload(attention_impl="fused")),
}
P, N, S_SRC = 6, 9, 7


def setup(name: str):
    kw, workload = CASES[name]
    s = spec(**kw)
    torch.manual_seed(0)
    model = build_model(s, workload).eval()
    src = torch.randint(0, s.vocab_size, (2, S_SRC)) if s.arch == "encoder-decoder" else None
    prompt = torch.randint(0, s.vocab_size, (2, P))
    return s, model, src, prompt


@pytest.mark.parametrize("name", list(CASES))
def test_kv_decode_logits_match_full_forward_every_step(name: str) -> None:
    s, model, src, prompt = setup(name)
    cache = model.new_cache()
    with torch.no_grad():
        logits = model.prefill(prompt, cache, encoder_input_ids=src)
        torch.testing.assert_close(logits, model.full_logits(prompt, src), atol=1e-5, rtol=1e-4)
        seq = prompt
        for _ in range(N):
            token = torch.randint(0, s.vocab_size, (2, 1))
            seq = torch.cat([seq, token], dim=1)
            step = model.decode_step(token, cache)  # [b, 1, V]
            full = model.full_logits(seq, src)[:, -1:]
            torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4)
    assert cache.length == P + N


@pytest.mark.parametrize("name", list(CASES))
def test_kv_generate_greedy_tokens_match_uncached(name: str) -> None:
    _, model, src, prompt = setup(name)
    cached = model.generate(prompt, N, encoder_input_ids=src)
    uncached = model.generate(prompt, N, use_cache=False, encoder_input_ids=src)
    assert cached.shape == (2, P + N)
    assert torch.equal(cached, uncached)


def test_kv_cache_holds_capped_positions_and_counts_bytes() -> None:
    """Cache size follows the glossary: P + t positions, capped at w (window) or the chunk."""
    window = spec(**DECODERS["mistral_window"])  # sliding_window = 5
    for s, workload, expect in [
        (spec(**DECODERS["gpt"]), None, lambda n: n),
        (window, None, lambda n: min(n, 5)),
        (spec(**LLAMA), Workload(attention_pattern="chunked", window=4), lambda n: (n - 1) % 4 + 1),
    ]:
        model = build_model(s, workload).eval()
        cache = model.new_cache()
        with torch.no_grad():
            model.prefill(torch.zeros(1, 3, dtype=torch.long), cache)
            for t in range(1, 8):
                model.decode_step(torch.zeros(1, 1, dtype=torch.long), cache)
                assert cache.held == expect(3 + t)
                n_bytes = 2 * s.n_decoder_layers * s.n_kv_heads * s.head_dim * expect(3 + t) * 4
                assert cache.nbytes() == n_bytes


def test_kv_cache_cross_attention_computed_once() -> None:
    s = spec(**DECODERS["vaswani_gqa"])
    model = build_model(s).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model.prefill(
            torch.zeros(2, 1, dtype=torch.long),
            cache,
            encoder_input_ids=torch.ones(2, S_SRC, dtype=torch.long),
        )
        first = cache.layers[0].cross_k
        model.decode_step(torch.zeros(2, 1, dtype=torch.long), cache)
    assert cache.layers[0].cross_k is first
    cross = 2 * s.n_decoder_layers * 2 * s.n_kv_heads * S_SRC * s.head_dim * 4
    assert cache.terms()["decoder.layers.cross_attn"] == cross
