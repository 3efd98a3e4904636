"""KV cache bytes: keys and values kept per layer for incremental decoding.

Closed form (Shazeer 2019 MQA, Ainslie et al. 2023 GQA: only h_kv heads are cached):
  {stack}.layers.self_attn   = 2 * L * b * T * h_kv * d_h * bytes   (keys + values)
  decoder.layers.cross_attn  = 2 * L_dec * b * s_src * h_kv * d_h * bytes   (encoder-decoder)
T is the number of cached positions: decode P + N after the last step, prefill s (the cache the
prefill fills); capped by the pattern (docs/glossary.md): a sliding window w keeps min(T, w)
positions, a chunk c keeps the current chunk's (T - 1) % c + 1. Only decoder stacks cache; the
cross-attention cache holds the keys and values of the s_src encoder outputs, computed once.
No cache (empty Breakdown) in training or when ``workload.kv_cache`` is False. bytes is the
size of ``workload.kv_cache_dtype`` (int4 packs two values per byte).
"""

from __future__ import annotations

from estimator.breakdown import Breakdown
from estimator.dtypes import nbytes
from estimator.implementations import register, rule
from estimator.spec import ModelSpec, Workload, resolved_pattern, resolved_prompt_len


def cached_positions(pattern: str, window: int | None, seen: int) -> int:
    """Positions the self-attention cache holds once ``seen`` tokens went through it."""
    if pattern == "sliding_window":
        return min(seen, window)
    if pattern == "chunked":
        return (seen - 1) % window + 1
    return seen


@register("kv.positions", "reference")
def kv_positions(pattern: str, window: int | None, seen: int, new: int) -> int:
    """Positions the cache holds after a pass of ``new`` tokens brought it to ``seen``
    (reference_model/cache.py keeps exactly the pattern's positions)."""
    return cached_positions(pattern, window, seen)


def decoder_len(spec: ModelSpec, workload: Workload) -> int:
    """Tokens of one full decoder pass: s_t (default s) for encoder-decoder, else s."""
    if spec.arch == "encoder-decoder":
        return workload.target_len or workload.seq_len
    return workload.seq_len


def _seen_tokens(spec: ModelSpec, workload: Workload, step: int | None) -> int:
    """Tokens through the decoder self-attention: prefill s (s_t), decode P + t."""
    if workload.mode == "decode":
        n = workload.new_tokens if step is None else step
        return resolved_prompt_len(spec, workload) + n
    return decoder_len(spec, workload)


def kv_cache_at(spec: ModelSpec, workload: Workload, step: int | None = None) -> Breakdown:
    """KV cache bytes after decode step ``step`` (0: after the prefill; None: the last step)."""
    if workload.mode == "train" or not workload.kv_cache or spec.n_decoder_layers == 0:
        return Breakdown(unit="bytes", terms={})
    b, L = workload.batch_size, spec.n_decoder_layers
    h_kv, d_h, dtype = spec.n_kv_heads, spec.head_dim, workload.kv_cache_dtype
    pattern, window = resolved_pattern(spec, workload, "decoder")
    seen = _seen_tokens(spec, workload, step)
    last_step = workload.new_tokens if step is None else step
    new = 1 if workload.mode == "decode" and last_step else seen  # the last pass's tokens
    T = rule("kv.positions", spec)(pattern, window, seen, new)
    terms = {"decoder.layers.self_attn": L * nbytes(2 * b * T * h_kv * d_h, dtype)}  # K, V
    if spec.arch == "encoder-decoder":
        s_src = workload.seq_len
        terms["decoder.layers.cross_attn"] = L * nbytes(2 * b * s_src * h_kv * d_h, dtype)
    return Breakdown(unit="bytes", terms=terms)


def kv_cache(spec: ModelSpec, workload: Workload) -> Breakdown:
    """KV cache bytes per term after the last decode step (prefill: after the prefill)."""
    return kv_cache_at(spec, workload)


def kv_cache_growth_bytes(spec: ModelSpec, workload: Workload) -> list[int]:
    """Total cache bytes after the prefill (index 0) and after each decode step t = 1..N."""
    steps = workload.new_tokens if workload.mode == "decode" else 0
    return [kv_cache_at(spec, workload, t).total for t in range(steps + 1)]


def kv_cache_max_bytes(spec: ModelSpec, workload: Workload) -> int:
    """Largest cache over the run: the last step, or a full chunk when one was filled."""
    last = kv_cache(spec, workload).total
    if workload.mode != "decode":
        return last
    last = max(last, kv_cache_at(spec, workload, 0).total)  # a prefill kept whole (hf window)
    pattern, window = resolved_pattern(spec, workload, "decoder")
    p, n = resolved_prompt_len(spec, workload), workload.new_tokens
    if pattern == "chunked" and (p + n) // window > (p - 1) // window:  # a chunk was full
        full = workload.model_copy(update={"new_tokens": window, "prompt_len": window})
        return max(last, kv_cache_at(spec, full, 0).total)
    return last
