"""KV cache bytes: keys and values kept per layer for incremental decoding.

Closed form (Shazeer 2019 MQA, Ainslie et al. 2023 GQA: only h_kv heads are cached):
  {stack}.layers.self_attn   = 2 * L * b * T * h_kv * d_h * bytes   (keys + values)
  decoder.layers.cross_attn  = 2 * L_dec * b * s_src * h_kv * d_h * bytes   (encoder-decoder)
T is the number of cached positions: decode P + N after the last step, prefill s (the cache the
prefill fills); capped by the pattern (docs/glossary.md): a sliding window w keeps min(T, w)
positions, a chunk c keeps the current chunk's (T - 1) % c + 1 (rule ``kv.positions``: an
implementation may keep more). Only decoder stacks cache; the cross-attention cache holds the
keys and values of the s_src encoder outputs, computed once. No cache (no terms) in training
or when ``workload.kv_cache`` is False. bytes is the size of the KV cache dtype (int4 packs two
values per byte).
Issue 22: a per-layer pattern (Gemma 2/3, ``spec.layer_pattern``) keeps min(T, w) positions in
its sliding layers and T in its full ones; multi-head latent attention (DeepSeek-V2/V3) caches
the latent, in transformers 5 (DeepseekV3Attention.forward: ``cache.update(kv_nope, k_rot)``
before ``expand_kv``, the normed kv_nope [b, 1, T, kv_lora_rank] as keys and the rotated k_rot
[b, 1, T, qk_rope_head_dim] as values) as in vLLM: kv_lora_rank + qk_rope_head_dim = 576
values per token and layer for DeepSeek-V3 (``mla_latent_bytes_per_token``). transformers 4
cached the decompressed K [h, d_nope + d_rope] and V [h, d_v] (40,960 values); measured on
5.24 (tests/estimator/terms/test_kv_latent.py). The reference model (reference_model/mla.py,
issue 22l) caches the same latent and k_rot: one number for our reference model, transformers
5.24 and vLLM (tests/reference_model/test_ref_mla.py); transformers 4's is no engine modelled.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import nbytes
from estimator.spec.errors import UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.sym import vmax

Terms = dict[str, Any]


def kv_cache_at(spec: ModelSpec, sh: Shapes, step: Any | None = None) -> Terms:
    """KV cache bytes after decode step ``step`` (0: after the prefill; None: the last step)."""
    if sh.mode == "train" or not sh.kv_cache or spec.n_decoder_layers == 0:
        return {}
    b, L = sh.b, spec.n_decoder_layers
    h_kv, d_h, dtype = spec.n_kv_heads, spec.head_dim, sh.kv_dtype
    st = sh.stack("decoder")
    if sh.mode == "decode":  # tokens through the decoder self-attention: P + t
        seen = sh.prompt + (sh.new_tokens if step is None else step)
    else:
        seen = sh.s_dec
    last_step = sh.new_tokens if step is None else step
    new = 1 if sh.mode == "decode" and last_step else seen  # the last pass's tokens
    positions = rule("kv.positions", spec)
    if spec.layer_pattern is None:
        T = positions(st.pattern, st.window, seen, new)
        rows = L * T  # cached positions summed over the layers
    else:  # issue 22: Gemma's sliding and full layers keep their own positions
        n_sliding = layer_pattern_counts(spec, st)
        rows = n_sliding * positions("sliding_window", spec.sliding_window, seen, new)
        rows += (L - n_sliding) * positions("causal", None, seen, new)
    # K, V; MLA: the latent [b,1,T,kv_lora_rank] and k_rot [b,1,T,d_rope]
    terms = {"decoder.layers.self_attn": nbytes(b * rows * spec.self_cache_width, dtype)}
    if spec.arch == "encoder-decoder":
        terms["decoder.layers.cross_attn"] = L * nbytes(2 * b * sh.s_src * h_kv * d_h, dtype)
    return terms


def layer_pattern_counts(spec: ModelSpec, st: Any) -> int:
    """Sliding layers of a per-layer pattern (``spec.layer_pattern``: the others are full
    causal layers, transformers' DynamicCache layer_types); UnsupportedError when the
    workload asks for another pattern than the model's own (``st``: the decoder's
    StackShapes)."""
    if st.pattern != "sliding_window" or st.window != spec.sliding_window:
        raise UnsupportedError(
            f"attention_pattern={st.pattern!r} is not modelled with a per-layer layer_pattern "
            f"({spec.name}): its sliding layers keep sliding_window={spec.sliding_window}"
        )
    return spec.layer_pattern.count("sliding")


def mla_latent_bytes_per_token(spec: ModelSpec, dtype: str) -> int:
    """Latent KV cache of multi-head latent attention per token (one [kv_lora_rank +
    qk_rope_head_dim] vector per layer: vllm/attention/backends/mla, the compressed kv_c and
    the shared rotary k_pe; transformers 5's DeepseekV3Attention caches the same two,
    ``kv_cache``). DeepSeek-V3 in bf16: 61 * 576 * 2 = 70,272 bytes per token."""
    if not spec.kv_lora_rank:
        raise UnsupportedError(f"{spec.name} has no latent attention (kv_lora_rank)")
    return spec.n_decoder_layers * nbytes(spec.self_cache_width, dtype)


def kv_cache(spec: ModelSpec, sh: Shapes) -> Terms:
    """KV cache bytes per term after the last decode step (prefill: after the prefill)."""
    return kv_cache_at(spec, sh)


def kv_cache_growth_bytes(spec: ModelSpec, sh: Shapes) -> list[Any]:
    """Total cache bytes after the prefill (index 0) and after each decode step t = 1..N."""
    steps = sh.new_tokens if sh.mode == "decode" else 0
    return [sum(kv_cache_at(spec, sh, t).values()) for t in range(steps + 1)]


def kv_cache_max_bytes(spec: ModelSpec, sh: Shapes) -> Any:
    """Largest cache over the run: the last step, or a full chunk when one was filled."""
    last = sum(kv_cache(spec, sh).values())
    if sh.mode != "decode":
        return last
    last = vmax(last, sum(kv_cache_at(spec, sh, 0).values()))  # a prefill kept whole (hf)
    st = sh.stack("decoder")
    p, n = sh.prompt, sh.new_tokens
    if st.pattern == "chunked" and (p + n) // st.window > (p - 1) // st.window:  # a chunk full
        full = sh.with_sizes(spec, new_tokens=st.window, prompt_len=st.window)
        return vmax(last, sum(kv_cache_at(spec, full, 0).values()))
    return last
