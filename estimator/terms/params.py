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
"""

from __future__ import annotations

import functools

from estimator.breakdown import Breakdown
from estimator.spec.model import ModelSpec

# (term name, numels of the module's own parameter tensors, number of such modules)
_Entry = tuple[str, tuple[int, ...], int]


def _linear(d_in: int, d_out: int, bias: bool) -> tuple[int, ...]:
    """nn.Linear(d_in, d_out): weight [d_out, d_in] (+ bias [d_out])."""
    return (d_in * d_out, d_out) if bias else (d_in * d_out,)


def _norm(spec: ModelSpec) -> tuple[int, ...]:
    """LayerNorm: weight + bias; RMSNorm: weight only."""
    d = spec.d_model
    return (d, d) if spec.norm == "layernorm" else (d,)


def _attention(spec: ModelSpec, prefix: str, n: int) -> list[_Entry]:
    d, d_q, d_kv, bias = spec.d_model, spec.q_dim, spec.kv_dim, spec.bias
    return [
        (f"{prefix}.q_proj", _linear(d, d_q, bias), n),  # [.., d] -> [.., h*d_h]
        (f"{prefix}.k_proj", _linear(d, d_kv, bias), n),  # [.., d] -> [.., h_kv*d_h]
        (f"{prefix}.v_proj", _linear(d, d_kv, bias), n),  # [.., d] -> [.., h_kv*d_h]
        (f"{prefix}.o_proj", _linear(d_q, d, bias), n),  # [.., h*d_h] -> [.., d]
    ]


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
    if spec.n_token_types and stack == spec.stacks[0][0]:  # segment embeddings: input stack
        out.append((f"{stack}.token_type", (spec.n_token_types * d,), 1))
    if spec.embed_norm:
        out.append((f"{stack}.embed_norm", _norm(spec), 1))
    return out


def _stack(spec: ModelSpec, stack: str, n_layers: int) -> list[_Entry]:
    d, d_ff, bias, L = spec.d_model, spec.d_ff, spec.bias, n_layers
    lay = f"{stack}.layers"
    out = _embeddings(spec, stack)
    out.append((f"{lay}.attn_norm", _norm(spec), L))
    out += _attention(spec, f"{lay}.self_attn", L)
    if stack == "decoder" and spec.arch == "encoder-decoder":
        out.append((f"{lay}.cross_norm", _norm(spec), L))
        out += _attention(spec, f"{lay}.cross_attn", L)
    out.append((f"{lay}.ffn_norm", _norm(spec), L))
    out.append((f"{lay}.ffn.up", _linear(d, d_ff, bias), L))  # [.., d] -> [.., d_ff]
    if spec.gated:
        out.append((f"{lay}.ffn.gate", _linear(d, d_ff, bias), L))  # [.., d] -> [.., d_ff]
    out.append((f"{lay}.ffn.down", _linear(d_ff, d, bias), L))  # [.., d_ff] -> [.., d]
    if spec.final_norm:
        out.append((f"{stack}.final_norm", _norm(spec), 1))
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
    """One layer's own tensors in registration order (reference_model/layers.py Layer)."""
    d, d_q, d_kv, d_ff, bias = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff, spec.bias
    attn = [
        *_linear_shapes(d, d_q, bias),  # q_proj
        *_linear_shapes(d, d_kv, bias),  # k_proj
        *_linear_shapes(d, d_kv, bias),  # v_proj
        *_linear_shapes(d_q, d, bias),  # o_proj
    ]
    if spec.fused_qkv:  # one projection d -> q, k, v (GPT-2's c_attn), then o_proj
        attn = [*_linear_shapes(d, d_q + 2 * d_kv, bias), *_linear_shapes(d_q, d, bias)]
    out = [*_norm_shapes(spec), *attn]
    if cross:
        out += [*_norm_shapes(spec), *attn]
    out += _norm_shapes(spec) + _linear_shapes(d, d_ff, bias)  # ffn_norm, ffn.up
    if spec.gated:
        out += _linear_shapes(d, d_ff, bias)  # ffn.gate
    return out + _linear_shapes(d_ff, d, bias)  # ffn.down


@functools.lru_cache(maxsize=256)  # depends on the spec only; hot in plan searches
def param_tensor_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """Shape of every distinct parameter tensor, in the order of the reference model's
    ``model.parameters()`` (tied ones once): what an optimizer iterates over, e.g. the
    for-loop step's temporaries depend on neighbouring tensors
    (estimator/replay/optimizer_step.py)."""
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
