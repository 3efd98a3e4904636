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
(``recompute.`` terms); "selective" recomputes the eager attention core only
(``recompute.*.scores``, ``recompute.*.mix``; Korthikanti et al. 2022 sec. 5).
Note: on CPU, FlopCounterMode has no formula for
``_scaled_dot_product_flash_attention_for_cpu`` (it counts 0); the sdpa terms follow the CUDA
kernels. Sources: Vaswani et al. 2017 (the layer); Kaplan et al. 2020 eq. 2.1-2.2 (C_forward
~ 2N + 2 n_layer n_ctx d_attn, training ~ 6N per token); Dao et al. 2022 (flash backward
recomputation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from estimator.rules.registry import rule
from estimator.shapes import Shapes, attention_pairs, cached_positions
from estimator.spec.errors import UnsupportedError
from estimator.spec.features import moe_layers
from estimator.spec.model import ModelSpec
from estimator.sym import StepSeries
from estimator.terms.finetune import freeze_exact, frozen_flags, lora_layer_targets

Terms = dict[str, Any]


@dataclass(frozen=True)
class PassShape:
    """One forward pass of a stack: b sequences of s_q query tokens."""

    b: Any
    s_q: Any
    pairs: Any  # self-attention (query, key) pairs per head and sequence
    s_src: Any = 0  # cross-attention keys (0: no cross-attention)
    cross_kv: bool = True  # the cross k_proj / v_proj run in this pass (False: cached)
    # issue 22: positions kv_b_proj decompresses per sequence (MLA: transformers caches the
    # latent, so a decode step decompresses the whole cache); None: s_q
    s_keys: Any = None
    # issue 22g: a cached decode step under a per-layer pattern (Gemma 2): the positions its
    # full layers attend to (every seen one; the sliding layers' are ``pairs``); None: no step
    full_keys: Any = None


def full_pass(spec: ModelSpec, sh: Shapes, stack: str, s: Any, s_src: Any = 0) -> PassShape:
    """A pass over s tokens of ``stack`` with its own pattern (training, prefill, no cache)."""
    st = sh.stack(stack)
    pairs = attention_pairs(st.pattern, st.window, st.causal, s, sh.causal_flops)
    return PassShape(sh.b, s, pairs, s_src)


def _attention(spec: ModelSpec, fused: bool, b: Any, s_q: Any, s_kv: Any, pairs: Any,
               kv: bool, math: bool = False,
               s_keys: Any = None) -> dict[str, tuple[Any, Any]]:  # fmt: skip
    """(forward, backward) of one attention block; s_kv tokens feed k_proj / v_proj.
    ``math``: fused attention runs torch's math sdpa (chunked blocks, reference_model/
    attention.py Attention.chunked), whose backward does not recompute the scores."""
    d, h, h_kv, d_h = spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim
    d_v = spec.v_head_dim if spec.kv_lora_rank else d_h  # MLA: values narrower than q.k
    t: dict[str, tuple[Any, Any]] = {}
    if spec.kv_lora_rank:
        t.update(_latent_projections(spec, b, s_q, s_kv if s_keys is None else s_keys, kv))
    else:
        q = 2 * b * s_q * d * h * d_h  # [b*s_q, d] @ [d, h*d_h]
        t["q_proj"] = (q, 2 * q)
        if kv:
            k = 2 * b * s_kv * d * h_kv * d_h  # [b*s_kv, d] @ [d, h_kv*d_h]
            t["k_proj"] = (k, 2 * k)
            t["v_proj"] = (k, 2 * k)
    one = 2 * b * h * pairs * d_h  # [b,h,s_q,d_h] @ [b,h,d_h,s_k], pairs = s_q*s_k (full)
    one_v = 2 * b * h * pairs * d_v  # [b,h,s_q,s_k] @ [b,h,s_k,d_v]
    if fused and math:  # math sdpa (chunked blocks): autograd through its ops, no recompute
        t["sdpa"] = (one + one_v, 2 * (one + one_v))
    elif fused:  # scores + mix; backward recomputes the scores (flop_counter sdpa_backward)
        t["sdpa"] = (one + one_v, 3 * one + 2 * one_v)
    else:
        t["scores"] = (one, 2 * one)  # Q K^T
        t["mix"] = (one_v, 2 * one_v)  # [b,h,s_q,s_k] @ [b,h,s_k,d_v]
    o = 2 * b * s_q * h * d_v * d  # [b*s_q, h*d_v] @ [h*d_v, d]
    t["o_proj"] = (o, 2 * o)
    return t


def _latent_projections(spec: ModelSpec, b: Any, s_q: Any, s_kv: Any,
                        kv: bool) -> dict[str, tuple[Any, Any]]:  # fmt: skip
    """Multi-head latent attention's projections (transformers deepseek_v3
    DeepseekV3Attention.forward): q through q_a_proj / q_b_proj (or q_proj), k and v from
    kv_a_proj_with_mqa on the s_q new tokens and kv_b_proj on the s_kv positions of the
    cache after its update (transformers 5 caches the latent and ``expand_kv`` decompresses
    all of it every pass: a decode step's kv_b_proj runs on every cached position)."""
    d, h, d_qk, d_v = spec.d_model, spec.n_heads, spec.head_dim, spec.v_head_dim
    r_q, r_kv, d_rope, d_nope = (spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim,
                                 spec.qk_nope_head_dim)  # fmt: skip
    t: dict[str, tuple[Any, Any]] = {}
    n = b * s_q
    if r_q:
        q_a = 2 * n * d * r_q  # [n, d] @ [d, r_q]
        q_b = 2 * n * r_q * h * d_qk  # [n, r_q] @ [r_q, h*d_qk]
        t["q_a_proj"], t["q_b_proj"] = (q_a, 2 * q_a), (q_b, 2 * q_b)
    else:
        q = 2 * n * d * h * d_qk  # [n, d] @ [d, h*d_qk]
        t["q_proj"] = (q, 2 * q)
    if kv:
        m = b * s_kv
        kv_a = 2 * n * d * (r_kv + d_rope)  # [n, d] @ [d, r_kv + d_rope]
        kv_b = 2 * m * r_kv * h * (d_nope + d_v)  # [m, r_kv] @ [r_kv, h*(d_nope + d_v)]
        t["kv_a_proj"], t["kv_b_proj"] = (kv_a, 2 * kv_a), (kv_b, 2 * kv_b)
    return t


def _ffn(spec: ModelSpec, b: Any, s_q: Any, L: int) -> list[tuple[str, Any, Any, int]]:
    """(name, forward, backward, layers) of the FFNs: dense ones (d_ff) on L - moe_layers
    layers; on the MoE layers the router, the k routed experts each token runs (exact for any
    routing: transformers' experts run each (token, expert) pair once, MixtralExperts.forward,
    so k * n tokens go through expert FFNs whichever experts they pick) and the shared MLP."""
    n, d = b * s_q, spec.d_model
    n_moe = moe_layers(spec)
    out = []
    up = 2 * n * d * spec.d_ff  # [n, d] @ [d, d_ff]
    names = ("up", "gate", "down") if spec.gated else ("up", "down")
    out += [(f"ffn.{k}", up, 2 * up, L - n_moe) for k in names]
    if not n_moe:
        return out
    router = 2 * n * d * spec.n_experts  # [n, d] @ [d, E]
    out.append(("ffn.router", router, 2 * router, n_moe))
    e = 2 * n * spec.n_experts_per_token * d * spec.expert_d_ff  # k * n x ([d] @ [d, d_e])
    out += [(f"ffn.experts.{k}", e, 2 * e, n_moe) for k in names]
    if spec.shared_expert_d_ff:
        sh = 2 * n * d * spec.shared_expert_d_ff  # [n, d] @ [d, d_s]
        out += [(f"ffn.shared.{k}", sh, 2 * sh, n_moe) for k in names]
    if spec.shared_expert_gate:
        g = 2 * n * d  # [n, d] @ [d, 1]
        out.append(("ffn.shared_gate", g, 2 * g, n_moe))
    return out


def _layer(spec: ModelSpec, sh: Shapes, p: PassShape, stack: str) -> dict[str, tuple[Any, Any]]:
    """(forward, backward) FLOPs of ONE layer, names relative to ``{stack}.layers``."""
    b, s_q = p.b, p.s_q
    fused = sh.attention_impl == "fused"
    unfused = rule("sdpa.math", spec)(sh)  # issue 22f: CPU training with dropout
    math = sh.stack(stack).pattern == "chunked" and s_q > 1 or unfused
    self_attn = _attention(spec, fused, b, s_q, s_q, p.pairs, True, math, p.s_keys)
    t = {f"self_attn.{k}": v for k, v in self_attn.items()}
    if p.s_src:
        cross = _attention(spec, fused, b, s_q, p.s_src, s_q * p.s_src, p.cross_kv, unfused)
        t.update({f"cross_attn.{k}": v for k, v in cross.items()})
    return t


def _layers(spec: ModelSpec, sh: Shapes, p: PassShape, stack: str,
            L: int) -> list[tuple[str, tuple[Any, Any], int]]:  # fmt: skip
    """(name, (forward, backward), layers) of the attention part of the layers: all L alike,
    or under a per-layer pattern (Gemma's ``spec.layer_pattern``) the sliding layers with the
    pass's pairs and the full ones with the causal pairs of the same s tokens (a full pass
    or a cached decode step with ``p.full_keys``: its full layers attend to every seen
    position, its sliding ones to ``p.pairs``)."""
    if spec.layer_pattern is None or stack != "decoder":
        return [(k, v, L) for k, v in _layer(spec, sh, p, stack).items()]
    from estimator.terms.kv_cache import layer_pattern_counts

    n_sliding = layer_pattern_counts(spec, sh.stack(stack))
    if p.full_keys is not None:  # a cached step: one query on every cached position
        full = PassShape(p.b, p.s_q, p.full_keys, p.s_src, p.cross_kv, p.full_keys)
    elif p.s_keys is not None:
        raise UnsupportedError(
            f"layer_pattern (per layer) is not modelled for this decode step of {spec.name}: "
            "its full layers' cached positions are not given"
        )
    else:
        pairs = attention_pairs("causal", None, True, p.s_q, sh.causal_flops)
        full = PassShape(p.b, p.s_q, pairs, p.s_src, p.cross_kv)
    out = [(k, v, n_sliding) for k, v in _layer(spec, sh, p, stack).items()]
    out += [(k, v, L - n_sliding) for k, v in _layer(spec, sh, full, stack).items()]
    return [x for x in out if x[2]]


def stack_terms(spec: ModelSpec, sh: Shapes, stack: str, p: PassShape,
                n_logits: Any = 0) -> Terms:  # fmt: skip
    """forward/backward/recompute terms of one pass of ``stack`` (+ the heads it feeds)."""
    L = dict(spec.stacks)[stack]
    train = sh.training
    recompute = train and sh.checkpointing == "full"
    selective = train and sh.checkpointing == "selective"  # the attention core again
    out: Terms = {}

    def add(name: str, fwd: Any, bwd: Any, per_layer: bool | int = False) -> None:
        n = per_layer if type(per_layer) is int else (L if per_layer else 1)
        out[f"forward.{name}"] = out.get(f"forward.{name}", 0) + n * fwd
        if train:
            out[f"backward.{name}"] = out.get(f"backward.{name}", 0) + n * bwd
        if recompute and per_layer:
            out[f"recompute.{name}"] = out.get(f"recompute.{name}", 0) + n * fwd
        elif selective and per_layer and name.endswith(("attn.scores", "attn.mix")):
            out[f"recompute.{name}"] = out.get(f"recompute.{name}", 0) + n * fwd

    if spec.is_patch_input:
        c, ps = spec.n_channels, spec.patch_size
        conv = 2 * p.b * spec.n_patches * spec.d_model * c * ps * ps  # conv [b,c,H,W] -> [b,d,..]
        add(f"{stack}.patch.proj", conv, conv)  # pixels need no grad: weight grad only
    for name, (fwd, bwd), n_layers in _layers(spec, sh, p, stack, L):
        add(f"{stack}.layers.{name}", fwd, bwd, per_layer=n_layers)
    for name, fwd, bwd, n_layers in _ffn(spec, p.b, p.s_q, L):
        if n_layers:
            add(f"{stack}.layers.{name}", fwd, bwd, per_layer=n_layers)
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


def _full_model(spec: ModelSpec, sh: Shapes, s_dec: Any) -> Terms:
    """One full forward (+ backward in training): encoder on s, decoder on s_dec tokens."""
    b, s = sh.b, sh.s
    parts = []
    if spec.arch == "encoder":
        parts.append(stack_terms(spec, sh, "encoder", full_pass(spec, sh, "encoder", s),
                                 n_logits=b * s))  # fmt: skip
    else:
        s_src = s if spec.arch == "encoder-decoder" else 0
        if s_src:
            parts.append(stack_terms(spec, sh, "encoder", full_pass(spec, sh, "encoder", s)))
        dec = full_pass(spec, sh, "decoder", s_dec, s_src)
        parts.append(stack_terms(spec, sh, "decoder", dec, n_logits=b * s_dec))
    return merge(*parts)


def step_pairs(sh: Shapes, seen: Any, cache: bool) -> Any:
    """(query, key) pairs per head of a decode step that brings the decoder to ``seen`` tokens:
    with a cache one query against the cached positions, else a full pass over all of them."""
    st = sh.stack("decoder")
    if cache:
        return cached_positions(st.pattern, st.window, seen)
    return attention_pairs(st.pattern, st.window, st.causal, seen, sh.causal_flops)


def decode_step_at(spec: ModelSpec, sh: Shapes, seen: Any, pairs: Any, cache: bool) -> Terms:
    """Forward terms of the decode step that brings the decoder to ``seen`` tokens, with
    ``pairs`` (query, key) pairs per head (``step_pairs``): with a cache one query, else the
    whole prefix again."""
    if not cache:
        p = PassShape(sh.b, seen, pairs, sh.s_src)
        return stack_terms(spec, sh, "decoder", p, n_logits=sh.b * seen)
    full_keys = seen if spec.layer_pattern is not None else None  # issue 22g: full layers
    p = PassShape(sh.b, 1, pairs, sh.s_src, cross_kv=False, s_keys=pairs, full_keys=full_keys)
    return stack_terms(spec, sh, "decoder", p, n_logits=sh.b)


def decode_step(spec: ModelSpec, sh: Shapes, t: Any, cache: bool) -> Terms:
    """Forward terms of decode step t: with a cache one query, else the whole P + t prefix."""
    seen = sh.prompt + t
    return decode_step_at(spec, sh, seen, step_pairs(sh, seen, cache), cache)


def prefill_terms(spec: ModelSpec, sh: Shapes) -> Terms:
    """Decode's prefill: the encoder on s (encoder-decoder) and the decoder on the P prompt."""
    return _full_model(spec, sh, sh.prompt)


#: up to this many decode steps they are summed one by one (a closed form costs about as much)
STEPWISE_UP_TO = 32


def decode_steps(
    spec: ModelSpec, sh: Shapes, cache: bool, stepwise: bool = False
) -> tuple[Terms, Any]:
    """(the N decode steps' terms summed, the per-step totals), t = 1..N. Past
    ``STEPWISE_UP_TO`` steps (or with symbolic sizes, estimator/symbolic/) the sum is a closed
    form over t: a step's FLOPs are linear in t and in its (query, key) pairs, whose sum over
    the steps estimator/sums.py gives, so the cost does not grow with N; the per-step totals
    come as a lazy StepSeries (``symbolic.Steps`` while traced). ``stepwise``: step by step
    (what the closed form is tested against; also taken when a step is not linear)."""
    concrete = type(sh.new_tokens) is int and type(sh.prompt) is int
    if concrete and (stepwise or sh.new_tokens <= STEPWISE_UP_TO):
        steps = [decode_step(spec, sh, t, cache) for t in range(1, sh.new_tokens + 1)]
        return merge(*steps), [sum(x.values()) for x in steps]
    from estimator.symbolic import NotTraceable, sum_steps, tracing

    st = sh.stack("decoder")
    if cache:
        pairs: tuple[Any, ...] = ("sum_cached_positions", st.pattern, st.window)
    else:
        pairs = ("sum_attention_pairs", st.pattern, st.window, st.causal, sh.causal_flops)

    def pairs_at(seen: Any) -> Any:
        return step_pairs(sh, seen, cache)

    def summed() -> tuple[Terms, Any]:
        def step(seen: Any, q: Any) -> Terms:
            return decode_step_at(spec, sh, seen, q, cache)

        return sum_steps(step, sh.prompt, sh.new_tokens, pairs, pairs_at)

    if not concrete:  # inside a trace: the sums as expressions of the sizes
        return summed()
    try:
        with tracing():  # one step traced over t and its pairs, the rest plain numbers
            sums, per = summed()
    except NotTraceable:
        return decode_steps(spec, sh, cache, stepwise=True)
    return sums, StepSeries(per.a, per.b, per.c, per.prompt, per.n, per.pairs_at)


def decode_flops(spec: ModelSpec, sh: Shapes) -> dict[str, Any]:
    """Prefill, per-step and total FLOPs of N decode steps with and without a KV cache (the
    fields of breakdown.DecodeFlops).

    With a cache step t costs the projections of one token plus attention over the P + t
    cached positions: O(n d^2 + n d) per step, O(n^2 d) in total for attention. Without a
    cache step t re-runs the P + t prefix: O(n^2 d) per step, O(n^3 d) for attention in total.
    """
    pre = sum(prefill_terms(spec, sh).values())
    with_terms, with_cache = decode_steps(spec, sh, True)
    without_terms, without = decode_steps(spec, sh, False)
    return {
        "prefill_flops": pre,
        "per_step_flops": with_cache,
        "per_step_flops_without_cache": without,
        "total_with_cache_flops": pre + sum(with_terms.values()),
        "total_without_cache_flops": pre + sum(without_terms.values()),
    }


def flops(spec: ModelSpec, sh: Shapes) -> Terms:
    """FLOPs per term; see the module docstring for formulas and conventions.

    train: forward + backward (+ recompute) of one step, loss on all decoder positions.
    prefill: one forward over s (s_t for the decoder of an encoder-decoder model), logits on
    all positions. decode: the prefill plus N steps (with the KV cache unless kv_cache=False),
    all as ``forward.`` terms; ``decode_flops`` splits them per step.
    """
    if sh.mode == "decode":
        terms = merge(prefill_terms(spec, sh), decode_steps(spec, sh, sh.kv_cache)[0])
    else:
        terms = _full_model(spec, sh, sh.s_dec)
    if sh.training and sh.finetune.lora:  # issue 20: frozen base, adapters (rules/finetune.py)
        adapters = lora_layer_targets(spec, sh.finetune, "decoder")
        terms = rule("flops.frozen", spec)(spec, sh, terms, adapters)
    if sh.training and sh.finetune.kind == "freeze" and freeze_exact(spec, sh):  # issue 20
        terms = rule("flops.freeze", spec)(spec, sh, terms, frozen_flags(spec, sh))
    return {k: v for k, v in terms.items() if v}
