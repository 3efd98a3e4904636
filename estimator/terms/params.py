"""Exact parameter count of a ModelSpec, one leaf term per module of the reference model.

Each term is a module path of docs/glossary.md with the layer index removed, holding the
module's OWN parameters (weight + bias, recurse=False), summed over the layers of its stack.
A tied ``lm_head`` has no term: its weight is ``embed.weight``, counted once at its first owner.

Closed form per layer (d = d_model, d_q = h * d_h, d_kv = h_kv * d_h, bias terms when
``spec.bias``; n(d) = 2d for LayerNorm, d for RMSNorm):
  self_attn  d*d_q + 2*d*d_kv + d_q*d      (+ d_q + 2*d_kv + d)
  cross_attn same shapes as self_attn (decoder of encoder-decoder models)
  ffn        d*d_ff * (3 if gated else 2)  (+ d_ff * (2 if gated else 1) + d)
  norms      n(d) per norm (attn_norm, ffn_norm, cross_norm)
Head: pooler.proj d*d + d; BERT's MLM head_transform dense d*d + d and a norm; lm_head V*d
unless tied (+ V with lm_head_bias); classifier d*n_labels + n_labels.
Positional tables: learned (max_seq_len + position_offset) x d, ViT n_positions x d,
relative Embedding(relative_buckets, h); sinusoidal and rotary are buffers (no parameters).

Issue 22: biases per group (qkv_bias, o_bias, ffn_bias); qk_norm n(d_h) ('head') or n(h d_h),
n(h_kv d_h) ('full') per layer; sandwich norms add attn_out_norm and ffn_out_norm, 'output'
norms have only those; a parallel block with one norm has no ffn_norm. Transformer-XL
relative positions (Dai et al. 2019, sec. 3.3): W_{k,R} d -> h d_h per layer (self_attn.r_proj)
and u, v [h, d_h] once (pos). Mixture of experts, per MoE layer: router d*E, experts
E * d*d_e * (3 if gated else 2), a shared MLP d*d_s * (3 if gated else 2) (+ d for Qwen2-MoE's
shared gate); dense layers keep the d_ff FFN. Latent attention (MLA): see _latent_attention.
``active_params`` counts what one token runs: the top-k routed experts of each MoE layer.
"""

from __future__ import annotations

import functools

from estimator.breakdown import Breakdown
from estimator.rules.registry import rule
from estimator.spec.errors import UnsupportedError
from estimator.spec.features import features, moe_layers
from estimator.spec.model import ModelSpec

# (term name, numels of the module's own parameter tensors, number of such modules)
_Entry = tuple[str, tuple[int, ...], int]


def _linear(d_in: int, d_out: int, bias: bool) -> tuple[int, ...]:
    """nn.Linear(d_in, d_out): weight [d_out, d_in] (+ bias [d_out])."""
    return (d_in * d_out, d_out) if bias else (d_in * d_out,)


def _norm(spec: ModelSpec, width: int | None = None) -> tuple[int, ...]:
    """LayerNorm: weight + bias; RMSNorm: weight only (over d_model unless ``width``)."""
    d = spec.d_model if width is None else width
    return (d, d) if spec.norm == "layernorm" else (d,)


def _attention(spec: ModelSpec, prefix: str, n: int) -> list[_Entry]:
    d, d_q, d_kv = spec.d_model, spec.q_dim, spec.kv_dim
    qkv_bias, o_bias = spec.qkv_bias, spec.o_bias
    if spec.kv_lora_rank:
        return _latent_attention(spec, prefix, n)
    out = [
        (f"{prefix}.q_proj", _linear(d, d_q, qkv_bias), n),  # [.., d] -> [.., h*d_h]
        (f"{prefix}.k_proj", _linear(d, d_kv, qkv_bias), n),  # [.., d] -> [.., h_kv*d_h]
        (f"{prefix}.v_proj", _linear(d, d_kv, qkv_bias), n),  # [.., d] -> [.., h_kv*d_h]
        (f"{prefix}.o_proj", _linear(d_q, d, o_bias), n),  # [.., h*d_h] -> [.., d]
    ]
    if spec.qk_norm != "none":  # Qwen3Attention q_norm / k_norm over d_h; Olmo2 over h*d_h
        head = spec.qk_norm == "head"
        out.append((f"{prefix}.q_norm", _norm(spec, spec.head_dim if head else d_q), n))
        out.append((f"{prefix}.k_norm", _norm(spec, spec.head_dim if head else d_kv), n))
    if spec.position == "xl_relative":  # Transformer-XL: W_{k,R} per layer (Dai et al. 2019)
        out.append((f"{prefix}.r_proj", _linear(d, d_q, False), n))  # [.., d] -> [.., h*d_h]
    return out


def _latent_attention(spec: ModelSpec, prefix: str, n: int) -> list[_Entry]:
    """Multi-head latent attention (transformers deepseek_v3 DeepseekV3Attention.__init__):
    q_a_proj d -> r_q (bias: attention_bias), q_a_layernorm RMSNorm(r_q), q_b_proj r_q ->
    h*(d_nope + d_rope) (no bias); without q_lora_rank one q_proj d -> h*(d_nope + d_rope)
    (no bias); kv_a_proj_with_mqa d -> r_kv + d_rope (bias: attention_bias), kv_a_layernorm
    RMSNorm(r_kv), kv_b_proj r_kv -> h*(d_nope + d_v) (no bias), o_proj h*d_v -> d."""
    d, h, d_qk, d_v = spec.d_model, spec.n_heads, spec.head_dim, spec.v_head_dim
    r_q, r_kv, d_rope, d_nope = (spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim,
                                 spec.qk_nope_head_dim)  # fmt: skip
    out: list[_Entry] = []
    if r_q:
        out.append((f"{prefix}.q_a_proj", _linear(d, r_q, spec.qkv_bias), n))  # d -> r_q
        out.append((f"{prefix}.q_a_norm", _norm(spec, r_q), n))
        out.append((f"{prefix}.q_b_proj", _linear(r_q, h * d_qk, False), n))  # r_q -> h*d_qk
    else:
        out.append((f"{prefix}.q_proj", _linear(d, h * d_qk, False), n))  # d -> h*d_qk
    out += [
        (f"{prefix}.kv_a_proj", _linear(d, r_kv + d_rope, spec.qkv_bias), n),  # d -> r_kv+d_rope
        (f"{prefix}.kv_a_norm", _norm(spec, r_kv), n),
        (f"{prefix}.kv_b_proj", _linear(r_kv, h * (d_nope + d_v), False), n),  # latent -> k, v
        (f"{prefix}.o_proj", _linear(h * d_v, d, spec.o_bias), n),  # [.., h*d_v] -> [.., d]
    ]
    return out


def _embeddings(spec: ModelSpec, stack: str) -> list[_Entry]:
    """Per-stack input modules: patch embedding, positions, token types, embedding norm."""
    d = spec.d_model
    out: list[_Entry] = []
    if spec.is_patch_input:
        p, c = spec.patch_size, spec.n_channels
        out.append((f"{stack}.patch", (d,), 1))  # class token [1, 1, d]
        out.append((f"{stack}.patch.proj", (d * c * p * p, d), 1))  # Conv2d(c, d, p, stride=p)
    if spec.position == "learned":
        rows = spec.n_positions if spec.is_patch_input else spec.max_seq_len + spec.position_offset
        out.append((f"{stack}.pos", (rows * d,), 1))
    elif spec.position == "relative":
        out.append((f"{stack}.pos", (spec.relative_buckets * spec.n_heads,), 1))
    elif spec.position == "xl_relative":  # Transformer-XL's u, v [h, d_h], shared by the layers
        out.append((f"{stack}.pos", (2 * spec.q_dim,), 1))
    if spec.n_token_types and stack == spec.stacks[0][0]:  # segment embeddings: input stack
        out.append((f"{stack}.token_type", (spec.n_token_types * d,), 1))
    if spec.embed_norm:
        out.append((f"{stack}.embed_norm", _norm(spec), 1))
    return out


def _stack(spec: ModelSpec, stack: str, n_layers: int) -> list[_Entry]:
    L = n_layers
    lay = f"{stack}.layers"
    out = _embeddings(spec, stack)
    pre, post = spec.sublayer_norm != "output", spec.sublayer_norm != "input"
    if pre:
        out.append((f"{lay}.attn_norm", _norm(spec), L))
    out += _attention(spec, f"{lay}.self_attn", L)
    if post:  # Gemma2DecoderLayer post_attention_layernorm; Olmo2's the same name
        out.append((f"{lay}.attn_out_norm", _norm(spec), L))
    if stack == "decoder" and spec.arch == "encoder-decoder":
        out.append((f"{lay}.cross_norm", _norm(spec), L))
        out += _attention(spec, f"{lay}.cross_attn", L)
    if pre and spec.parallel_block != "one_norm":  # one_norm: the FFN reads attn_norm's output
        out.append((f"{lay}.ffn_norm", _norm(spec), L))
    out += _ffn(spec, lay, L)
    if post:  # Gemma2DecoderLayer / Olmo2DecoderLayer post_feedforward_layernorm
        out.append((f"{lay}.ffn_out_norm", _norm(spec), L))
    if spec.final_norm:
        out.append((f"{stack}.final_norm", _norm(spec), 1))
    return out


def _ffn(spec: ModelSpec, lay: str, L: int) -> list[_Entry]:
    """Dense FFNs (d_ff) on the dense layers; on the others (``moe_layers``) the router, the
    experts and the shared MLP (transformers mixtral MixtralExperts / MixtralTopKRouter,
    qwen2_moe Qwen2MoeSparseMoeBlock, deepseek_v3 DeepseekV3MoE): experts hold gate_up
    [E, 2*d_e, d] and down [E, d, d_e] without biases, the router weight [E, d]."""
    d, d_ff, bias = spec.d_model, spec.d_ff, spec.ffn_bias
    n_moe = moe_layers(spec)
    n_dense = L - n_moe
    out: list[_Entry] = [(f"{lay}.ffn.up", _linear(d, d_ff, bias), n_dense)]  # d -> d_ff
    if spec.gated:
        out.append((f"{lay}.ffn.gate", _linear(d, d_ff, bias), n_dense))  # d -> d_ff
    out.append((f"{lay}.ffn.down", _linear(d_ff, d, bias), n_dense))  # d_ff -> d
    if not n_moe:
        return out
    E, d_e = spec.n_experts, spec.expert_d_ff
    out.append((f"{lay}.ffn.router", _linear(d, E, False), n_moe))  # [.., d] -> [.., E]
    out.append((f"{lay}.ffn.experts.up", (E * d * d_e,), n_moe))  # E x (d -> d_e)
    if spec.gated:
        out.append((f"{lay}.ffn.experts.gate", (E * d * d_e,), n_moe))  # E x (d -> d_e)
    out.append((f"{lay}.ffn.experts.down", (E * d_e * d,), n_moe))  # E x (d_e -> d)
    if spec.shared_expert_d_ff:
        d_s = spec.shared_expert_d_ff
        out.append((f"{lay}.ffn.shared.up", _linear(d, d_s, False), n_moe))  # d -> d_s
        if spec.gated:
            out.append((f"{lay}.ffn.shared.gate", _linear(d, d_s, False), n_moe))  # d -> d_s
        out.append((f"{lay}.ffn.shared.down", _linear(d_s, d, False), n_moe))  # d_s -> d
    if spec.shared_expert_gate:  # Qwen2MoeSparseMoeBlock.shared_expert_gate: Linear(d, 1)
        out.append((f"{lay}.ffn.shared_gate", _linear(d, 1, False), n_moe))
    return out


def _entries(spec: ModelSpec) -> list[_Entry]:
    d = spec.d_model
    out: list[_Entry] = []
    if spec.vocab_size is not None:
        out.append(("embed", (spec.vocab_size * d,), 1))  # Embedding(V, d), shared by stacks
    for stack, n_layers in spec.stacks:
        out += _stack(spec, stack, n_layers)
    if spec.pooler:
        out.append(("pooler.proj", _linear(d, d, True), 1))  # dense d -> d (+ tanh)
    if spec.head_transform:  # BERT's MLM head: dense d -> d, act, LayerNorm
        out.append(("head_transform.dense", _linear(d, d, True), 1))
        out.append(("head_transform.norm", _norm(spec), 1))
    if spec.lm_head and not spec.tie_embeddings:
        out.append(("lm_head", _linear(d, spec.vocab_size, spec.lm_head_bias), 1))  # d -> V
    elif spec.lm_head_bias:  # tied weight (counted at embed), own bias [V]
        out.append(("lm_head", (spec.vocab_size,), 1))
    if spec.n_labels:
        out.append(("classifier", _linear(d, spec.n_labels, True), 1))  # d -> n_labels
    return out


@functools.lru_cache(maxsize=256)  # depends on the spec only (a frozen, hashable model)
def params(spec: ModelSpec) -> Breakdown:
    """Parameters per module (unit "params"); zero terms omitted. See the module docstring."""
    terms: dict[str, int] = {}
    for name, numels, copies in _entries(spec):
        n = sum(numels) * copies
        if n:
            terms[name] = terms.get(name, 0) + n
    return Breakdown(unit="params", terms=terms)


def param_tensor_numels(spec: ModelSpec) -> list[int]:
    """numel of every distinct parameter tensor of the reference model (tied ones once)."""
    return [
        numel for _, numels, copies in _entries(spec) for _ in range(copies) for numel in numels
    ]


def n_param_tensors(spec: ModelSpec) -> int:
    """Number of distinct parameter tensors (weight and bias count 2; tied storage once)."""
    return len(param_tensor_numels(spec))


def _linear_shapes(d_in: int, d_out: int, bias: bool) -> list[tuple[int, ...]]:
    """nn.Linear(d_in, d_out): weight [d_out, d_in] (+ bias [d_out])."""
    return [(d_out, d_in), (d_out,)] if bias else [(d_out, d_in)]


def _norm_shapes(spec: ModelSpec) -> list[tuple[int, ...]]:
    return [(spec.d_model,)] * len(_norm(spec))


def _layer_shapes(spec: ModelSpec, cross: bool) -> list[tuple[int, ...]]:
    """One layer's own tensors in registration order (reference_model/layers.py Layer; a
    class whose order differs registers rule ``params.layer_shapes``, issue 22d)."""
    if not cross and (own := rule("params.layer_shapes", spec)(spec)) is not None:
        return list(own)
    d, d_q, d_kv, d_ff = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff
    qkv, o, ffn = spec.qkv_bias, spec.o_bias, spec.ffn_bias
    attn = [
        *_linear_shapes(d, d_q, qkv),  # q_proj
        *_linear_shapes(d, d_kv, qkv),  # k_proj
        *_linear_shapes(d, d_kv, qkv),  # v_proj
        *_linear_shapes(d_q, d, o),  # o_proj
    ]
    if spec.fused_qkv:  # one projection d -> q, k, v (GPT-2's c_attn), then o_proj
        attn = [*_linear_shapes(d, d_q + 2 * d_kv, qkv), *_linear_shapes(d_q, d, o)]
    if spec.kv_lora_rank:  # issue 22l: reference_model/mla.py LatentAttention.__init__
        attn = _latent_shapes(spec)
    if spec.qk_norm != "none":  # q_norm, k_norm after o_proj (Qwen3Attention.__init__)
        head = spec.qk_norm == "head"
        widths = (spec.head_dim, spec.head_dim) if head else (d_q, d_kv)
        attn += [(w,) for w in widths for _ in _norm(spec, w)]
    out = [*_norm_shapes(spec), *attn]
    sandwich = _norm_shapes(spec) if spec.sublayer_norm == "sandwich" else []  # issue 22p
    out += sandwich  # attn_out_norm (reference_model/layers.py Layer)
    if cross:
        out += [*_norm_shapes(spec), *attn]
    # ffn_norm; a parallel block of one norm has none (reference_model/layers.py Layer)
    ffn_norm = [] if spec.parallel_block == "one_norm" else _norm_shapes(spec)
    if spec.fused_gate_up:  # ffn_norm, one gate_up [2 d_ff, d] (Phi3MLP.gate_up_proj)
        gate_up = _linear_shapes(d, 2 * d_ff, ffn)
        return out + ffn_norm + gate_up + _linear_shapes(d_ff, d, ffn) + sandwich
    out += ffn_norm + _linear_shapes(d, d_ff, ffn)  # ffn_norm, ffn.up
    if spec.gated:
        out += _linear_shapes(d, d_ff, ffn)  # ffn.gate
    return out + _linear_shapes(d_ff, d, ffn) + sandwich  # ffn.down (, ffn_out_norm)


def _latent_shapes(spec: ModelSpec) -> list[tuple[int, ...]]:
    """Latent attention's tensors in registration order (reference_model/mla.py
    LatentAttention: q_proj, or q_a_proj, q_a_norm, q_b_proj; kv_a_proj, kv_a_norm, kv_b_proj,
    o_proj; the names and shapes of ``_latent_attention``)."""
    d, h, d_qk, d_v = spec.d_model, spec.n_heads, spec.head_dim, spec.v_head_dim
    r_q, r_kv, d_rope = spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim
    if r_q:
        q = [*_linear_shapes(d, r_q, spec.qkv_bias), *[(r_q,)] * len(_norm(spec, r_q))]
        q += _linear_shapes(r_q, h * d_qk, False)
    else:
        q = _linear_shapes(d, h * d_qk, False)
    kv = [*_linear_shapes(d, r_kv + d_rope, spec.qkv_bias), *[(r_kv,)] * len(_norm(spec, r_kv))]
    kv += _linear_shapes(r_kv, h * (spec.qk_nope_head_dim + d_v), False)
    return q + kv + _linear_shapes(h * d_v, d, spec.o_bias)


def _moe_layer_shapes(spec: ModelSpec, i: int) -> list[tuple[int, ...]]:
    """Layer ``i`` of a mixture of experts (issue 22): a layer of ``dense_layers`` as
    ``_layer_shapes``, else its FFN replaced by the router weight [E, d] and the experts'
    gate_up [E, 2 d_e, d] and down [E, d, d_e] (transformers modeling_mixtral
    MixtralTopKRouter.weight, MixtralExperts.gate_up_proj / down_proj), then the shared
    MLP's gate, up, down (no biases)."""
    dense = _layer_shapes(spec, False)
    if i in spec.dense_layers:
        return dense
    if (own := rule("params.moe_layer_shapes", spec)(spec)) is not None:  # issue 22v
        return list(own)
    n_ffn = (2 if spec.fused_gate_up else 3 if spec.gated else 2) * (2 if spec.ffn_bias else 1)
    # issue 22e: the MoE block's own order (Mixtral's: rules/hf/moe.py; reference_model/moe.py)
    return dense[:-n_ffn] + [shape for _, shape in rule("params.moe_ffn_shapes", spec)(spec)]


@functools.lru_cache(maxsize=256)  # depends on the spec only; hot in plan searches
def param_tensor_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """Shape of every distinct parameter tensor, in the order of the reference model's
    ``model.parameters()`` (tied ones once): what an optimizer iterates over, e.g. the
    for-loop step's temporaries depend on neighbouring tensors
    (estimator/replay/optimizer_step.py)."""
    # issue 22p: layer_pattern, soft-caps: no parameters of their own; sandwich norms below
    known = ("qkv_bias", "o_bias", "ffn_", "qk_norm", "rotary_dim", "fused_gate_up",
             "n_experts", "expert_d_ff",  # below (issue 22: MoE layers)
             "parallel_block", "embed_scale", "kv_lora_rank",
             "layer_pattern", "sublayer_norm='sandwich'", "attn_softcap",
             "final_softcap")  # fmt: skip
    unmodelled = [f for f in features(spec) if not f.startswith(known)]
    if unmodelled and rule("params.layer_shapes", spec)(spec) is None:  # else the class's
        raise UnsupportedError(
            f"parameter tensor shapes (the optimizer step's order) are not modelled for "
            f"{', '.join(unmodelled)}"
        )
    d = spec.d_model
    out: list[tuple[int, ...]] = []
    if spec.vocab_size is not None:
        out.append((spec.vocab_size, d))  # embed
    for stack, n_layers in spec.stacks:
        if spec.is_patch_input:
            p, c = spec.patch_size, spec.n_channels
            out += [(1, 1, d), (d, c, p, p), (d,)]  # class token, Conv2d weight and bias
        if spec.position == "learned":
            rows = spec.n_positions if spec.is_patch_input else spec.max_seq_len
            out.append((rows + (0 if spec.is_patch_input else spec.position_offset), d))
        elif spec.position == "relative":
            out.append((spec.relative_buckets, spec.n_heads))
        if spec.n_token_types and stack == spec.stacks[0][0]:
            out.append((spec.n_token_types, d))
        if spec.embed_norm:
            out += _norm_shapes(spec)
        cross = stack == "decoder" and spec.arch == "encoder-decoder"
        if stack == "decoder" and spec.n_experts:  # issue 22: MoE layers but dense_layers
            out += [t for i in range(n_layers) for t in _moe_layer_shapes(spec, i)]
        else:
            out += _layer_shapes(spec, cross) * n_layers
        if spec.final_norm:
            out += _norm_shapes(spec)
    if spec.pooler:
        out += _linear_shapes(d, d, True)
    if spec.head_transform:
        out += _linear_shapes(d, d, True) + _norm_shapes(spec)
    if spec.lm_head and not spec.tie_embeddings:
        out.append((spec.vocab_size, d))
    if spec.lm_head_bias:
        out.append((spec.vocab_size,))
    if spec.n_labels:
        out += _linear_shapes(d, spec.n_labels, True)
    return tuple(out)


def active_params(spec: ModelSpec) -> int:
    """Parameters one token runs through: all but the n_experts - k routed experts it skips in
    each MoE layer (Mixtral 8x7B: about 12.9 B of 46.7 B); a dense model's total."""
    total = params(spec).total
    if not spec.n_experts:
        return total
    per_expert = spec.d_model * spec.expert_d_ff * (3 if spec.gated else 2)
    return total - moe_layers(spec) * (spec.n_experts - spec.n_experts_per_token) * per_expert
