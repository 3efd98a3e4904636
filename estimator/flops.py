"""FLOPs per module of the reference model: forward, backward, recompute; decode costs.

Counting convention (as ``torch.utils.flop_counter.FlopCounterMode`` counts): matmul-like ops
only (mm, bmm, addmm, conv, sdpa), 2 FLOPs per multiply-add; a bias add inside addmm, norms,
softmax, activations, rotary, dropout and the loss are elementwise and NOT counted. Embedding
lookups are 0 FLOPs. Terms: ``forward.<module>``, ``backward.<module>``, ``recompute.<module>``.

Closed forms (n = b * s_q query tokens of one pass, per layer, times L in one place):
  q_proj, o_proj          2 n d (h d_h)          k_proj, v_proj   2 n_kv d (h_kv d_h)
  self_attn.scores, .mix  2 b h A d_h each        (eager)  A = (query, key) pairs per head
  self_attn.sdpa          2 * 2 b h A d_h         (fused: both matmuls, as FlopCounterMode)
  ffn.up, ffn.gate        2 n d d_ff              ffn.down         2 n d_ff d
  head_transform.dense 2 n d d (BERT MLM); lm_head 2 n d V; pooler.proj 2 b d d (first
  position); classifier 2 b d n_labels (pooled / first position); patch.proj 2 b n_patches d c p^2.
A = s_q * s_k under causal_flops="full" (the rectangle eager attention and FlopCounterMode
compute, masked entries included); under "triangle" only the unmasked pairs: causal
s(s+1)/2, sliding window the band, chunked per chunk. Chunked attention is computed chunk by
chunk: ceil(s/c) blocks of c x c (the last one padded) in both eager and fused. Cross-attention:
A = s_t * s_src. Decode step with a cache: one query against the cached positions.
Backward: 2x forward for every matmul (grad of input and of weight; both operands of the
attention matmuls need grad); fused sdpa backward counts 5 matmuls (it recomputes the scores:
2.5x forward, as FlopCounterMode's sdpa_backward_flop); ViT patch.proj sees pixels that need no
grad: weight grad only (1x). Checkpointing "full" recomputes each layer's forward in backward
(``recompute.`` terms). Note: on CPU, FlopCounterMode has no formula for
``_scaled_dot_product_flash_attention_for_cpu`` (it counts 0); the sdpa terms follow the CUDA
kernels. Sources: Vaswani et al. 2017 (the layer); Kaplan et al. 2020 eq. 2.1-2.2 (C_forward
~ 2N + 2 n_layer n_ctx d_attn, training ~ 6N per token); Dao et al. 2022 (flash backward
recomputation).
"""

from __future__ import annotations

from dataclasses import dataclass

from estimator.breakdown import Breakdown, DecodeFlops
from estimator.kv_cache import cached_positions, decoder_len
from estimator.spec import ModelSpec, Workload, resolved_pattern, resolved_prompt_len

Terms = dict[str, int]


@dataclass(frozen=True)
class Pass:
    """One forward pass of a stack: b sequences of s_q query tokens."""

    b: int
    s_q: int
    pairs: int  # self-attention (query, key) pairs per head and sequence
    s_src: int = 0  # cross-attention keys (0: no cross-attention)
    cross_kv: bool = True  # the cross k_proj / v_proj run in this pass (False: cached)


def is_causal(pattern: str, stack: str) -> bool:
    """Causal stacks: decoders unless the pattern is full; encoders only under 'causal'."""
    return pattern != "full" if stack == "decoder" else pattern == "causal"


def attention_pairs(pattern: str, window: int | None, causal: bool, s: int, convention: str) -> int:
    """(query, key) pairs per head of a full self-attention pass over s tokens."""
    triangle = convention == "triangle"
    if pattern == "chunked":
        n_chunks = -(-s // window)  # the last chunk is padded to c and computed in full
        if not triangle:
            return n_chunks * window * window
        sizes = [window] * (s // window) + ([s % window] if s % window else [])
        return sum(c * (c + 1) // 2 if causal else c * c for c in sizes)
    if not triangle:
        return s * s
    if pattern == "sliding_window":
        w = window
        if causal:
            return s * (s + 1) // 2 if s <= w else w * (w + 1) // 2 + (s - w) * w
        return s * s - (s - w) * (s - w + 1) if s > w else s * s
    return s * (s + 1) // 2 if causal else s * s


def full_pass(spec: ModelSpec, workload: Workload, stack: str, s: int, s_src: int = 0) -> Pass:
    """A pass over s tokens of ``stack`` with its own pattern (training, prefill, no cache)."""
    pattern, window = resolved_pattern(spec, workload, stack)
    causal = is_causal(pattern, stack)
    pairs = attention_pairs(pattern, window, causal, s, workload.causal_flops)
    return Pass(workload.batch_size, s, pairs, s_src)


def _attention(spec: ModelSpec, fused: bool, b: int, s_q: int, s_kv: int, pairs: int,
               kv: bool, math: bool = False) -> dict[str, tuple[int, int]]:  # fmt: skip
    """(forward, backward) of one attention block; s_kv tokens feed k_proj / v_proj.
    ``math``: fused attention runs torch's math sdpa (chunked blocks, reference_model/
    attention.py Attention.chunked), whose backward does not recompute the scores."""
    d, h, h_kv, d_h = spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim
    t: dict[str, tuple[int, int]] = {}
    q = 2 * b * s_q * d * h * d_h  # [b*s_q, d] @ [d, h*d_h]
    t["q_proj"] = (q, 2 * q)
    if kv:
        k = 2 * b * s_kv * d * h_kv * d_h  # [b*s_kv, d] @ [d, h_kv*d_h]
        t["k_proj"] = (k, 2 * k)
        t["v_proj"] = (k, 2 * k)
    one = 2 * b * h * pairs * d_h  # [b,h,s_q,d_h] @ [b,h,d_h,s_k], pairs = s_q*s_k (full)
    if fused and math:  # math sdpa (chunked blocks): autograd through its ops, no recompute
        t["sdpa"] = (2 * one, 4 * one)
    elif fused:
        t["sdpa"] = (2 * one, 5 * one)  # scores + mix; backward recomputes the scores
    else:
        t["scores"] = (one, 2 * one)  # Q K^T
        t["mix"] = (one, 2 * one)  # [b,h,s_q,s_k] @ [b,h,s_k,d_h]
    o = 2 * b * s_q * h * d_h * d  # [b*s_q, h*d_h] @ [h*d_h, d]
    t["o_proj"] = (o, 2 * o)
    return t


def _layer(spec: ModelSpec, workload: Workload, p: Pass, stack: str) -> dict[str, tuple[int, int]]:
    """(forward, backward) FLOPs of ONE layer, names relative to ``{stack}.layers``."""
    b, s_q, d, d_ff = p.b, p.s_q, spec.d_model, spec.d_ff
    fused = workload.attention_impl == "fused"
    math = resolved_pattern(spec, workload, stack)[0] == "chunked" and s_q > 1
    self_attn = _attention(spec, fused, b, s_q, s_q, p.pairs, True, math)
    t = {f"self_attn.{k}": v for k, v in self_attn.items()}
    if p.s_src:
        cross = _attention(spec, fused, b, s_q, p.s_src, s_q * p.s_src, p.cross_kv)
        t.update({f"cross_attn.{k}": v for k, v in cross.items()})
    up = 2 * b * s_q * d * d_ff  # [b*s, d] @ [d, d_ff]
    t["ffn.up"] = (up, 2 * up)
    if spec.gated:
        t["ffn.gate"] = (up, 2 * up)  # [b*s, d] @ [d, d_ff]
    t["ffn.down"] = (up, 2 * up)  # [b*s, d_ff] @ [d_ff, d]
    return t


def stack_terms(spec: ModelSpec, workload: Workload, stack: str, p: Pass,
                n_logits: int = 0) -> Terms:  # fmt: skip
    """forward/backward/recompute terms of one pass of ``stack`` (+ the heads it feeds)."""
    L = dict(spec.stacks)[stack]
    train = workload.is_training
    recompute = train and workload.checkpointing == "full"
    out: Terms = {}

    def add(name: str, fwd: int, bwd: int, per_layer: bool = False) -> None:
        n = L if per_layer else 1
        out[f"forward.{name}"] = out.get(f"forward.{name}", 0) + n * fwd
        if train:
            out[f"backward.{name}"] = out.get(f"backward.{name}", 0) + n * bwd
        if recompute and per_layer:
            out[f"recompute.{name}"] = out.get(f"recompute.{name}", 0) + n * fwd

    if spec.is_patch_input:
        c, ps = spec.n_channels, spec.patch_size
        conv = 2 * p.b * spec.n_patches * spec.d_model * c * ps * ps  # conv [b,c,H,W] -> [b,d,..]
        add(f"{stack}.patch.proj", conv, conv)  # pixels need no grad: weight grad only
    for name, (fwd, bwd) in _layer(spec, workload, p, stack).items():
        add(f"{stack}.layers.{name}", fwd, bwd, per_layer=True)
    d = spec.d_model
    if spec.pooler and stack == spec.stacks[-1][0]:
        pool = 2 * p.b * d * d  # [b, d] @ [d, d], first position
        add("pooler.proj", pool, 2 * pool)
    if spec.n_labels and stack == spec.stacks[-1][0]:
        cls = 2 * p.b * d * spec.n_labels  # [b, d] @ [d, n_labels]
        add("classifier", cls, 2 * cls)
    if n_logits and spec.head_transform:
        dense = 2 * n_logits * d * d  # [n, d] @ [d, d]
        add("head_transform.dense", dense, 2 * dense)
    if n_logits and spec.lm_head:
        head = 2 * n_logits * d * spec.vocab_size  # [n, d] @ [d, V]
        add("lm_head", head, 2 * head)
    return out


def merge(*parts: Terms) -> Terms:
    out: Terms = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out


def _full_model(spec: ModelSpec, workload: Workload, s_dec: int) -> Terms:
    """One full forward (+ backward in training): encoder on s, decoder on s_dec tokens."""
    b, s = workload.batch_size, workload.seq_len
    parts = []
    if spec.arch == "encoder":
        parts.append(stack_terms(spec, workload, "encoder", full_pass(spec, workload, "encoder", s),
                                 n_logits=b * s))  # fmt: skip
    else:
        s_src = s if spec.arch == "encoder-decoder" else 0
        if s_src:
            parts.append(stack_terms(spec, workload, "encoder",
                                     full_pass(spec, workload, "encoder", s)))  # fmt: skip
        dec = full_pass(spec, workload, "decoder", s_dec, s_src)
        parts.append(stack_terms(spec, workload, "decoder", dec, n_logits=b * s_dec))
    return merge(*parts)


def _decode_step(spec: ModelSpec, workload: Workload, t: int, cache: bool) -> Terms:
    """Forward terms of decode step t: with a cache one query, else the whole P + t prefix."""
    seen = resolved_prompt_len(spec, workload) + t
    b = workload.batch_size
    s_src = workload.seq_len if spec.arch == "encoder-decoder" else 0
    if not cache:
        p = full_pass(spec, workload, "decoder", seen, s_src)
        return stack_terms(spec, workload, "decoder", p, n_logits=b * seen)
    pattern, window = resolved_pattern(spec, workload, "decoder")
    p = Pass(b, 1, cached_positions(pattern, window, seen), s_src, cross_kv=False)
    return stack_terms(spec, workload, "decoder", p, n_logits=b)


def _prefill(spec: ModelSpec, workload: Workload) -> Terms:
    """Decode's prefill: the encoder on s (encoder-decoder) and the decoder on the P prompt."""
    return _full_model(spec, workload, resolved_prompt_len(spec, workload))


def decode_flops(spec: ModelSpec, workload: Workload) -> DecodeFlops:
    """Prefill, per-step and total FLOPs of N decode steps with and without a KV cache.

    With a cache step t costs the projections of one token plus attention over the P + t
    cached positions: O(n d^2 + n d) per step, O(n^2 d) in total for attention. Without a
    cache step t re-runs the P + t prefix: O(n^2 d) per step, O(n^3 d) for attention in total.
    """
    pre = sum(_prefill(spec, workload).values())
    steps = range(1, workload.new_tokens + 1)
    with_cache = [sum(_decode_step(spec, workload, t, True).values()) for t in steps]
    without = [sum(_decode_step(spec, workload, t, False).values()) for t in steps]
    return DecodeFlops(
        prefill_flops=pre,
        per_step_flops=with_cache,
        per_step_flops_without_cache=without,
        total_with_cache_flops=pre + sum(with_cache),
        total_without_cache_flops=pre + sum(without),
    )


def flops(spec: ModelSpec, workload: Workload) -> Breakdown:
    """FLOPs per term (unit "flops"); see the module docstring for formulas and conventions.

    train: forward + backward (+ recompute) of one step, loss on all decoder positions.
    prefill: one forward over s (s_t for the decoder of an encoder-decoder model), logits on
    all positions. decode: the prefill plus N steps (with the KV cache unless kv_cache=False),
    all as ``forward.`` terms; ``decode_flops`` splits them per step.
    """
    if workload.mode == "decode":
        cache = workload.kv_cache
        steps = [_decode_step(spec, workload, t, cache) for t in range(1, workload.new_tokens + 1)]
        terms = merge(_prefill(spec, workload), *steps)
    else:
        terms = _full_model(spec, workload, decoder_len(spec, workload))
    return Breakdown(unit="flops", terms={k: v for k, v in terms.items() if v})
