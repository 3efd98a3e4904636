"""The training forward's moment inside a LoRA-wrapped linear of the last layer (issue 20;
rule ``live.lora_moment``), as reference_model/lora.py LoraLinear.forward runs peft's
lora.Linear.forward (peft/tuners/lora/layer.py):

    result = F.linear(x, W, b)                         # [n, d_out], base dtype (cb)
    x = x.to(fp32)                                     # a 16-bit base: the cast copy
    result = result + lora_B(lora_A(x)) * scaling      # lora_B's output and ``* scaling``,
    return result.to(result_dtype)                     #   both [n, d_out] fp32, live at once

With a small vocabulary the loss moment (logits, log-softmax) is lower than this one: at the
multiply, the base output and two [n, d_out] adapter-dtype tensors are live beside every tensor
saved so far. Live then, beyond the states (names relative to ``{stack}.layers``):
  saved       every activation saved before the last layer, and the last layer's own saved
              set up to and including the wrapped module's lora_A / lora_B (forward order of
              reference_model/layers.py Layer and attention.py Attention: attn_norm, q, k, v,
              rotary, scores, mix, o, ffn_norm, gate, act, up, product, down; ungated: up,
              act, down)
  input       the module's input, when nothing saves it: lora_A saves a cast copy (16-bit
              base) or the dropout output (lora_dropout > 0), the frozen base none; relu's
              output (down's input) is saved by relu
  cast copy   x.to(fp32) under lora_dropout on a 16-bit base (dropout saves its mask and
              lora_A its output, not the copy)
  locals      q's output at k, q's and k's at v (Attention.forward / self_attention hold
              them, nothing has saved them yet); act(gate(x)) at up (the product saves it
              later); at o and down, the sublayer's input norm(x) [n, d] (Attention.forward's
              and FeedForward.forward's ``x``), unless a wrapped q, k, v (gate, up) lora_A
              saved it
  transients  result [n, d_out] (cb) + lora_B's output and the product with scaling
              [n, d_out] each in the adapter dtype
  embeddings  Transformer.forward's ``x`` = embed(input_ids) [b, s, d] (rules/finetune.py
              ``live.frozen_head_input``: nothing saves it under LoRA)
Decoder-only, pre-norm; under full checkpointing ``_checkpointed``; selective: 0, not
modelled. Measured: tests/tgauge/test_validate_lora_reference.py.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import bits
from estimator.spec.model import ModelSpec
from estimator.sym import vmax

#: a layer's saved terms in forward order (reference_model/layers.py, attention.py)
ORDER = ("attn_norm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn",
         "self_attn.scores", "self_attn.mix", "self_attn.o_proj", "ffn_norm", "ffn.gate",
         "ffn.act", "ffn.up", "ffn", "ffn.down")  # fmt: skip
_UNGATED = (*ORDER[:9], "ffn.up", "ffn.act", "ffn.down")  # down(act(up(x)))
_HEAD = ("decoder.final_norm", "lm_head", "loss")
#: the linears reading the attention's and the FFN's input (the norm output)
_GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("ffn.gate", "ffn.up"))


def _module(term: str) -> str:
    return term.removesuffix(".lora_A").removesuffix(".lora_B")


def _widths(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each linear LoRA may wrap."""
    d, d_ff, q, kv = spec.d_model, spec.d_ff, spec.q_dim, spec.kv_dim
    return {"self_attn.q_proj": (d, q), "self_attn.k_proj": (d, kv),
            "self_attn.v_proj": (d, kv), "self_attn.o_proj": (q, d), "ffn.gate": (d, d_ff),
            "ffn.up": (d, d_ff), "ffn.down": (d_ff, d)}  # fmt: skip


def _locals(spec: ModelSpec, sh: Shapes, name: str, n: Any) -> Any:
    """Outputs held by the forward's locals at ``name``, saved by nothing yet."""
    cb, q, kv = sh.cb, spec.q_dim, spec.kv_dim
    held = {"self_attn.k_proj": n * q * cb, "self_attn.v_proj": n * (q + kv) * cb}
    if spec.gated:
        held["ffn.up"] = n * spec.d_ff * cb  # act(gate(x))
    return held.get(name, 0)


@register("live.lora_moment", "reference")
def lora_moment(spec: ModelSpec, sh: Shapes, acts: dict[str, Any], layer: dict[str, Any]) -> Any:
    """Bytes beyond the states live at the highest wrapped linear of the last layer (module
    docstring). ``acts``: activation terms by name (no ``activations.`` prefix); ``layer``:
    one steady layer's saved set under LoRA (estimator/terms/activations.py frozen_layers)."""
    if spec.arch != "decoder" or spec.norm_position != "pre" or sh.checkpointing == "selective":
        return 0
    if sh.checkpointing == "full":
        return _checkpointed(spec, sh, acts, layer)
    n, cb = sh.b * sh.s_dec, sh.cb
    before = sum(acts.values()) - sum(acts.get(k, 0) for k in _HEAD) - sum(layer.values())
    before += n * spec.d_model * cb  # the token embeddings
    return before + layer_moment(spec, sh, layer)


@register("live.lora_recompute", "reference")
def recompute_moment(spec: ModelSpec, sh: Shapes, layer: dict[str, Any]) -> Any:
    """What a checkpointed layer's recompute in backward adds at its highest wrapped linear
    (``layer_moment`` less its input, which the checkpoint holds already). Non-reentrant
    checkpoint stops the recompute once the last saved tensor is packed again
    (torch/utils/checkpoint.py, early stop, _StopRecomputationError): when the layer's last
    saver is a wrapped linear's lora_B, its ``* scaling`` never runs (measured within 2%
    on a 16-bit base: where the stop falls is not modelled to the tensor)."""
    input_ = sh.b * sh.s_dec * spec.d_model * sh.cb  # attn_norm's saved input: the checkpoint's
    return layer_moment(spec, sh, layer, recompute=True) - input_


def layer_moment(spec: ModelSpec, sh: Shapes, layer: dict[str, Any], recompute: bool = False):
    """Bytes of one layer's forward at its highest wrapped linear: its saved set ``layer``
    up to that module, the unsaved inputs, locals and transients (module docstring)."""
    ft = sh.finetune
    order = ORDER if spec.gated else _UNGATED  # FeedForward.forward
    last = max(order.index(_module(k)) for k in layer if _module(k) in order)
    n, cb, ab = sh.b * sh.s_dec, sh.cb, bits(ft.adapter_dtype) // 8
    shares_x = ft.dropout == 0 and ab == sh.ib
    best: Any = 0
    for name, (d_in, d_out) in _widths(spec).items():
        if f"{name}.lora_A" not in layer:
            continue
        upto = order[: order.index(name) + 1]
        live = sum(v for k, v in layer.items() if _module(k) in upto)
        saved_input = shares_x or (name == "ffn.down" and spec.activation == "relu")
        live += 0 if saved_input else n * d_in * cb
        live += n * d_in * ab if ft.dropout > 0 and ab != sh.ib else 0  # the cast copy
        stops = recompute and order.index(name) == last  # early stop after lora_B
        live += _locals(spec, sh, name, n) + n * d_out * (cb + (1 if stops else 2) * ab)
        outer = {"self_attn.o_proj": _GROUPS[0], "ffn.down": _GROUPS[1]}.get(name)
        if outer and not (shares_x and any(f"{g}.lora_A" in layer for g in outer)):
            live += n * spec.d_model * cb  # the sublayer's input: norm(x), held by its call
        best = vmax(best, live)
    return best


@register("live.lora_recompute", "hf")
def hf_layer_moment(spec: ModelSpec, sh: Shapes, layer: dict[str, Any]) -> Any:
    """Not modelled for the Hugging Face classes: 0."""
    return 0


def _checkpointed(spec: ModelSpec, sh: Shapes, acts: dict[str, Any], layer: dict[str, Any]) -> Any:
    """Under full checkpointing the last layer's forward keeps none of its saved set (the
    checkpoint packs nothing but its input): live at a wrapped linear are the saved terms
    (every layer's input) and the layer's locals: the residual after attention (FFN
    modules), the sublayer's input norm(x), the module's own input where it is another
    tensor (o: the merged heads, down: the FFN's inner [n, d_ff]), the cast copy on a 16-bit
    base (LoraLinear.forward's ``x``), the locals of ``_locals`` and the transients; the
    token embeddings only where embed_extras made layer 0's input a new tensor."""
    ab, cb, d = bits(sh.finetune.adapter_dtype) // 8, sh.cb, spec.d_model
    n = sh.b * sh.s_dec
    base = sum(acts.values()) - sum(acts.get(k, 0) for k in _HEAD)
    if spec.position in ("learned", "sinusoidal") or spec.n_token_types or spec.embed_norm:
        base += n * d * cb  # embed(input_ids), beside layer 0's input x + pos
    best: Any = 0
    for name, (d_in, d_out) in _widths(spec).items():
        if f"{name}.lora_A" not in layer:
            continue
        live = base + n * d * cb  # norm(x)
        live += n * d * cb if name.startswith("ffn.") else 0  # x + attention(norm(x))
        live += n * d_in * cb if name in ("self_attn.o_proj", "ffn.down") else 0
        live += n * d_in * ab if ab != sh.ib else 0  # the cast copy
        live += _locals(spec, sh, name, n) + n * d_out * (cb + 2 * ab)
        best = vmax(best, live)
    return best
