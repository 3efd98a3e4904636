"""What a fine-tuning step trains (issue 20): trainable parameters, and the tensors the
gradients and optimizer states are kept for (``Shapes.finetune``, estimator/spec/finetune.py).

  full     every parameter tensor (param_tensor_shapes), in the weight dtype
  freeze   every tensor whose term name matches no ``frozen`` pattern (fnmatch), weight dtype
  lora     per wrapped linear [d_out, d_in]: lora_A.weight [r, d_in] and lora_B.weight
           [d_out, r], no bias (peft LoraConfig bias="none", lora_bias=False), in the adapter
           dtype (fp32: get_peft_model's autocast_adapter_dtype=True); the base is frozen
           (peft/tuners/tuners_utils.py BaseTuner._mark_only_adapters_as_trainable)
  qlora    as lora, on a base whose linears are 4-bit (estimator/terms/quant_bnb.py)
Parameters are named as estimator/terms/params.py names them (the layer index removed); the
adapters as ``<module>.lora_A`` and ``<module>.lora_B``. A wrapped module's tensors come in the
order peft registers them (base_layer.weight, lora_A.default.weight, lora_B.default.weight,
peft/tuners/lora/layer.py LoraLayer.update_layer), which is what the optimizer iterates over.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from estimator.rules.registry import rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import nbytes
from estimator.spec.errors import SpecError
from estimator.spec.finetune import FinetuneShapes
from estimator.spec.model import ModelSpec
from estimator.terms.params import param_tensor_shapes

Shape = tuple[int, ...]
Named = tuple[tuple[str, Shape], ...]


def _linear(name: str, d_in: int, d_out: int, bias: bool) -> list[tuple[str, Shape]]:
    """nn.Linear(d_in, d_out): weight [d_out, d_in] (+ bias [d_out])."""
    return [(name, (d_out, d_in))] + ([(name, (d_out,))] if bias else [])


def _norm(spec: ModelSpec, name: str) -> list[tuple[str, Shape]]:
    d = spec.d_model
    return [(name, (d,))] * (2 if spec.norm == "layernorm" else 1)


def _attention(spec: ModelSpec, p: str) -> list[tuple[str, Shape]]:
    """q, k, v (or one fused qkv), o, then QK-norm's q_norm / k_norm (Qwen3Attention.__init__
    registers them after o_proj); biases as the spec's qkv_bias / o_bias (issue 22)."""
    d, d_q, d_kv = spec.d_model, spec.q_dim, spec.kv_dim
    qkv_bias, o_bias = spec.qkv_bias, spec.o_bias
    if spec.kv_lora_rank:  # issue 22l: reference_model/mla.py LatentAttention
        return _latent_attention(spec, p)
    if spec.fused_qkv:  # one projection d -> q, k, v (GPT-2's c_attn)
        qkv = _linear(f"{p}.qkv", d, d_q + 2 * d_kv, qkv_bias)
    else:
        qkv = [
            *_linear(f"{p}.q_proj", d, d_q, qkv_bias),
            *_linear(f"{p}.k_proj", d, d_kv, qkv_bias),
            *_linear(f"{p}.v_proj", d, d_kv, qkv_bias),
        ]
    out = qkv + _linear(f"{p}.o_proj", d_q, d, o_bias)
    if spec.qk_norm != "none":
        head = spec.qk_norm == "head"
        per = 2 if spec.norm == "layernorm" else 1
        for name, width in (("q_norm", spec.head_dim if head else d_q),
                            ("k_norm", spec.head_dim if head else d_kv)):  # fmt: skip
            out += [(f"{p}.{name}", (width,))] * per
    return out


def _latent_attention(spec: ModelSpec, p: str) -> list[tuple[str, Shape]]:
    """Latent attention's tensors in registration order (estimator.terms.params._latent_shapes):
    q_proj, or q_a_proj, q_a_norm, q_b_proj; kv_a_proj, kv_a_norm, kv_b_proj, o_proj."""
    d, h, d_qk, d_v = spec.d_model, spec.n_heads, spec.head_dim, spec.v_head_dim
    r_q, r_kv, d_rope = spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim
    if r_q:
        out = _linear(f"{p}.q_a_proj", d, r_q, spec.qkv_bias)
        out += [(f"{p}.q_a_norm", (r_q,))] * (2 if spec.norm == "layernorm" else 1)
        out += _linear(f"{p}.q_b_proj", r_q, h * d_qk, False)
    else:
        out = _linear(f"{p}.q_proj", d, h * d_qk, False)
    out += _linear(f"{p}.kv_a_proj", d, r_kv + d_rope, spec.qkv_bias)
    out += [(f"{p}.kv_a_norm", (r_kv,))] * (2 if spec.norm == "layernorm" else 1)
    out += _linear(f"{p}.kv_b_proj", r_kv, h * (spec.qk_nope_head_dim + d_v), False)
    return out + _linear(f"{p}.o_proj", h * d_v, d, spec.o_bias)


def _layer(spec: ModelSpec, lay: str, cross: bool) -> list[tuple[str, Shape]]:
    """One layer's tensors in registration order (reference_model/layers.py Layer; the FFN's
    bias as the spec's ffn_bias, Phi-3's fused gate_up: estimator.terms.params._layer_shapes)."""
    d, d_ff, bias = spec.d_model, spec.d_ff, spec.ffn_bias
    out = _norm(spec, f"{lay}.attn_norm") + _attention(spec, f"{lay}.self_attn")
    sandwich = spec.sublayer_norm == "sandwich"  # issue 22p: Layer's out norms
    out += _norm(spec, f"{lay}.attn_out_norm") if sandwich else []
    if cross:
        out += _norm(spec, f"{lay}.cross_norm") + _attention(spec, f"{lay}.cross_attn")
    # a parallel block with one norm has no ffn_norm (its FFN reads attn_norm's output)
    out += [] if spec.parallel_block == "one_norm" else _norm(spec, f"{lay}.ffn_norm")
    ffn_out = _norm(spec, f"{lay}.ffn_out_norm") if sandwich else []
    if spec.fused_gate_up:  # Phi3MLP.gate_up_proj [2 d_ff, d]
        out += _linear(f"{lay}.ffn.gate_up", d, 2 * d_ff, bias)
        return out + _linear(f"{lay}.ffn.down", d_ff, d, bias) + ffn_out
    out += _linear(f"{lay}.ffn.up", d, d_ff, bias)
    if spec.gated:
        out += _linear(f"{lay}.ffn.gate", d, d_ff, bias)
    return out + _linear(f"{lay}.ffn.down", d_ff, d, bias) + ffn_out


def _moe_layer(spec: ModelSpec, lay: str, i: int) -> list[tuple[str, Shape]]:
    """Layer ``i`` of a mixture of experts (estimator.terms.params._moe_layer_shapes): a
    dense layer, or its FFN replaced by the MoE block's tensors in their order (rule
    ``params.moe_ffn_shapes``: transformers' router, gate_up, down, shared MLP; the
    reference model's router and its experts' up, gate, down one by one)."""
    dense = _layer(spec, lay, False)
    if i in spec.dense_layers:
        return dense
    out = [x for x in dense if not x[0].startswith(f"{lay}.ffn.")]
    # issue 22e: the block's own order (rule params.moe_ffn_shapes: Mixtral's, the reference's)
    return out + [(f"{lay}.{k}", v) for k, v in rule("params.moe_ffn_shapes", spec)(spec)]


@functools.lru_cache(maxsize=256)
def named_param_shapes(spec: ModelSpec) -> Named:
    """(term name, shape) of every distinct parameter tensor, in the order of
    estimator.terms.params.param_tensor_shapes (a test holds the two equal; what that refuses
    by name, this refuses too)."""
    param_tensor_shapes(spec)  # UnsupportedError naming the features it does not order
    d = spec.d_model
    out: list[tuple[str, Shape]] = []
    if spec.vocab_size is not None:
        out.append(("embed", (spec.vocab_size, d)))
    for stack, n_layers in spec.stacks:
        if spec.is_patch_input:
            p, c = spec.patch_size, spec.n_channels
            out += [(f"{stack}.patch", (1, 1, d))]
            out += [(f"{stack}.patch.proj", (d, c, p, p)), (f"{stack}.patch.proj", (d,))]
        if spec.position == "learned":
            rows = spec.n_positions if spec.is_patch_input else spec.max_seq_len
            rows += 0 if spec.is_patch_input else spec.position_offset
            out.append((f"{stack}.pos", (rows, d)))
        elif spec.position == "relative":
            out.append((f"{stack}.pos", (spec.relative_buckets, spec.n_heads)))
        if spec.n_token_types and stack == spec.stacks[0][0]:
            out.append((f"{stack}.token_type", (spec.n_token_types, d)))
        if spec.embed_norm:
            out += _norm(spec, f"{stack}.embed_norm")
        cross = stack == "decoder" and spec.arch == "encoder-decoder"
        if stack == "decoder" and spec.n_experts:  # issue 22: MoE layers but dense_layers
            out += [t for i in range(n_layers) for t in _moe_layer(spec, f"{stack}.layers", i)]
        else:
            out += _layer(spec, f"{stack}.layers", cross) * n_layers
        if spec.final_norm:
            out += _norm(spec, f"{stack}.final_norm")
    if spec.pooler:
        out += _linear("pooler.proj", d, d, True)
    if spec.head_transform:
        out += _linear("head_transform.dense", d, d, True) + _norm(spec, "head_transform.norm")
    if spec.lm_head and not spec.tie_embeddings:
        out.append(("lm_head", (spec.vocab_size, d)))
    if spec.lm_head_bias:
        out.append(("lm_head", (spec.vocab_size,)))
    if spec.n_labels:
        out += _linear("classifier", d, spec.n_labels, True)
    return tuple(out)


def is_target(name: str, ft: FinetuneShapes) -> bool:
    """Whether LoRA wraps the module called ``name`` (peft matches the name's end)."""
    return any(name == t or name.endswith("." + t) for t in ft.targets)


def _is_frozen(name: str, ft: FinetuneShapes) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in ft.frozen)


@functools.lru_cache(maxsize=256)
def trainable_tensors(spec: ModelSpec, ft: FinetuneShapes, dtype: str) -> tuple:
    """(name, shape, dtype) of every trainable tensor, in the order the optimizer sees them
    (module docstring); ``dtype`` the weight dtype."""
    named = named_param_shapes(spec)
    if ft.kind == "full":
        return tuple((n, s, dtype) for n, s in named)
    if ft.kind == "freeze":
        for p in ft.frozen:
            if not any(fnmatch.fnmatchcase(n, p) for n, _ in named):
                names = ", ".join(dict.fromkeys(n for n, _ in named))
                raise SpecError(f"frozen pattern {p!r} matches no parameter of {spec.name}: "
                                f"the names are {names}")  # fmt: skip
        return tuple((n, s, dtype) for n, s in named if not _is_frozen(n, ft))
    out = []
    for name, shape in named:
        if len(shape) == 2 and is_target(name, ft):  # the weight [d_out, d_in]
            d_out, d_in = shape
            out.append((f"{name}.lora_A", (ft.rank, d_in), ft.adapter_dtype))
            out.append((f"{name}.lora_B", (d_out, ft.rank), ft.adapter_dtype))
    return tuple(out)


def trainable_shapes(spec: ModelSpec, sh: Shapes) -> tuple[Shape, ...]:
    """Shapes of the trainable tensors, in the optimizer's order."""
    return tuple(s for _, s, _ in trainable_tensors(spec, sh.finetune, sh.dtype))


def trainable_dtype(sh: Shapes) -> str:
    """The dtype of the trainable tensors (and so of their gradients): the adapters' under
    LoRA, else the weight dtype."""
    return sh.finetune.adapter_dtype if sh.finetune.lora else sh.dtype


def _numel(shape: Shape) -> int:
    n = 1
    for x in shape:
        n *= x
    return n


def trainable_params(spec: ModelSpec, sh: Shapes) -> dict[str, int]:
    """Trainable parameters per term name (unit params; adapters as ``<module>.lora_A/B``)."""
    out: dict[str, int] = {}
    for name, shape, _ in trainable_tensors(spec, sh.finetune, sh.dtype):
        out[name] = out.get(name, 0) + _numel(shape)
    return out


def gradient_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """One gradient per trainable tensor, in its dtype."""
    return sum(nbytes(_numel(s), d) for _, s, d in trainable_tensors(spec, sh.finetune, sh.dtype))


def adapter_weight_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """The LoRA adapters' weights (0 without LoRA)."""
    if not sh.finetune.lora:
        return 0
    return gradient_bytes(spec, sh)


def grad_bytes_by_module(spec: ModelSpec, sh: Shapes) -> dict[str, Any]:
    """Gradient bytes per module term (params.py's names: q_proj's adapters under
    ``...self_attn.q_proj``; a fused qkv's under q_proj, where the backward replay visits the
    projections), what AccumulateGrad keeps as backward reaches each module."""
    out: dict[str, Any] = {}
    for name, shape, d in trainable_tensors(spec, sh.finetune, sh.dtype):
        module = name.removesuffix(".lora_A").removesuffix(".lora_B")
        if module.endswith(".qkv"):
            module = module.removesuffix(".qkv") + ".q_proj"
        out[module] = out.get(module, 0) + nbytes(_numel(shape), d)
    return out


@functools.lru_cache(maxsize=256)
def lora_layer_targets(spec: ModelSpec, ft: FinetuneShapes, stack: str) -> tuple:
    """(name relative to ``{stack}.layers``, d_in, d_out) of every linear LoRA wraps in one
    layer of ``stack``; GPT-2's fused qkv named q_proj, the module the backward replay visits."""
    cross = stack == "decoder" and spec.arch == "encoder-decoder"
    out = []
    for name, shape in _layer(spec, "", cross):
        name = name.removeprefix(".")
        if len(shape) == 2 and is_target(name, ft):
            out.append((name.removesuffix(".qkv") + ".q_proj" if name.endswith(".qkv") else name,
                        shape[1], shape[0]))  # fmt: skip
    return tuple(out)


def is_frozen(sh: Shapes, name: str) -> bool:
    """Whether finetune='freeze' freezes the parameter term ``name`` (full, e.g.
    ``decoder.layers.ffn.up``)."""
    return _is_frozen(name, sh.finetune)


def frozen_flags(spec: ModelSpec, sh: Shapes) -> Mapping[str, bool]:
    """Every parameter term name -> whether finetune='freeze' freezes it: what the freeze
    rules (estimator/rules/freeze.py) receive, rules sitting below terms; a name missing is
    no parameter of the model."""
    return _frozen_flags(spec, sh.finetune)


@functools.lru_cache(maxsize=256)
def _frozen_flags(spec: ModelSpec, ft: FinetuneShapes) -> Mapping[str, bool]:
    return MappingProxyType({n: _is_frozen(n, ft) for n, _ in named_param_shapes(spec)})


def freeze_exact(spec: ModelSpec, sh: Shapes) -> bool:
    """Whether the freeze rules count the layers exactly: a decoder-only pre-norm model
    without full checkpointing whose embeddings train (every layer's input then needs a
    gradient), or whose embeddings (and position table) are frozen but layer 0's first
    module, attn_norm, trains (``frozen_input_norm``), and every layer parameter is one the
    rules know (``_FREEZE_KNOWN``). Else the full-training set is counted,
    an upper bound (estimate's ``unchecked`` says so): layers before the first trainable
    parameter save nothing and layer 0 saves less (measured on the reference model with every
    layer frozen: the saved set is then the final norm's and the head's alone, but the
    forward's moment at the loss, which the peak takes, is not modelled)."""
    if spec.arch != "decoder" or spec.is_patch_input or sh.checkpointing == "full":
        return False
    layer = {n.removeprefix("decoder.layers.") for n, _ in named_param_shapes(spec)
             if n.startswith("decoder.layers.")}  # fmt: skip
    if layer - _FREEZE_KNOWN:  # a fused gate_up, q_norm / k_norm, ...: rules not measured
        return False
    return not is_frozen(sh, "embed") or frozen_input_norm(spec, sh)


#: the layer parameters whose frozen saved set rules/freeze.py says (measured)
_FREEZE_KNOWN = {"attn_norm", "ffn_norm", "self_attn.q_proj", "self_attn.k_proj",
                 "self_attn.v_proj", "self_attn.qkv", "self_attn.o_proj", "ffn.gate", "ffn.up",
                 "ffn.down"}  # fmt: skip


def frozen_input_norm(spec: ModelSpec, sh: Shapes) -> bool:
    """Frozen embeddings (and learned position table), layer 0's pre-norm attn_norm training:
    its input needs no gradient, its output does, so only the norm itself saves less."""
    names = {name for name, _ in named_param_shapes(spec)}
    return (
        is_frozen(sh, "embed")
        and ("decoder.pos" not in names or is_frozen(sh, "decoder.pos"))
        and spec.norm_position == "pre"
        and "decoder.layers.attn_norm" in names
        and not is_frozen(sh, "decoder.layers.attn_norm")
    )
