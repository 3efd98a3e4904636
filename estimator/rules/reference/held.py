"""What the reference model and its training step hold besides the saved tensors, per kind:
the model's buffers, the step's inputs, what the forward keeps live at the loss, and the
positions a KV cache keeps (rules ``memory.buffers``, ``inputs.token_type``, ``train.held``,
``live.loss_moment``, ``kv.positions``), and what the rules do not model (``unsupported``).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register
from estimator.shapes import Shapes, cached_positions
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec


@register("kv.positions", "reference")
def kv_positions(pattern: str, window: int | None, seen: Any, new: Any) -> Any:
    """Positions the cache holds after a pass of ``new`` tokens brought it to ``seen``
    (reference_model/cache.py keeps exactly the pattern's positions)."""
    return cached_positions(pattern, window, seen)


@register("train.held", "reference")
def held_in_training(spec: ModelSpec, sh: Shapes) -> Any:
    """Bytes the forward keeps live at the loss besides the saved activations and the
    logits, freed with its output before backward: the embedding output that
    Transformer.forward (reference_model/model.py) binds to its local ``x = self.embed(
    input_ids)`` (or ``x = first.patch(pixel_values)``; encoder-decoder: ``y =
    self.embed(decoder_input_ids)`` too) and keeps until it returns, after the head and the
    loss, when Stack.embed_extras (reference_model/layers.py) makes a new tensor of it
    (positions added, token types, embedding norm or dropout) so that no layer saves it.
    Without a new tensor the first layer's norm (or its projections, or the checkpoint)
    saves that very tensor: counted with the activations. Measured under FSDP2 and DTensor
    TP (issue 18p, tests/tgauge/test_parallel_predicted_vs_measured.py: one [b s, d] fp32
    at the forward peak of the tiny decoder, learned positions); on one device too."""
    new_x = spec.position in ("learned", "sinusoidal") or spec.n_token_types or spec.embed_norm
    if not (new_x or sh.dropout > 0):
        return 0
    d, cb = spec.d_model, sh.cb
    if spec.arch == "encoder-decoder":
        return sh.b * (sh.s + sh.s_dec) * d * cb
    return sh.b * sh.s * d * cb


@register("fsdp.last_layer_param", "reference")
def last_layer_param(spec: ModelSpec) -> str:
    """The module (name after ``{stack}.layers.``) whose tensor a layer registers last, so
    FSDP2 lists it last in the layer's FSDPParamGroup (estimator/terms/ranks.py
    ``last_grads``): reference_model/layers.py Layer.__init__ registers attn_norm,
    self_attn, (cross_norm, cross_attn,) ffn_norm, ffn; FeedForward up, gate, down."""
    return "ffn.down"


@register("inputs.token_type", "reference")
def token_type_input_bytes(spec: ModelSpec, sh: Shapes) -> Any:
    """The token type ids the step passes in (reference_model.inputs: zeros [b, s])."""
    return sh.b * sh.s * INDEX_BYTES


@register("live.loss_moment", "reference")
def loss_moment_extra(spec: ModelSpec, sh: Shapes) -> Any:
    """Bytes live at the loss beyond the states, the saved tensors and the logits: none
    (reference_model's loss reads the targets as given)."""
    return 0


@register("memory.buffers", "reference")
def buffer_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """The model's buffers: SinusoidalPositions' table [n, d] per stack (n = n_positions for
    patch inputs, else max_seq_len), cast to the weight dtype by build_model; rotary angles
    and relative buckets are computed per call (no buffer)."""
    if spec.position != "sinusoidal":
        return 0
    n = spec.n_positions if spec.is_patch_input else spec.max_seq_len
    dtype = sh.dtype if sh.dtype in ("fp32", "fp16", "bf16") else "fp32"
    return len(spec.stacks) * nbytes(n * spec.d_model, dtype)


@register("unsupported", "reference")
def nothing_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """What the rules do not model for this run (one line), else None: the reference rules
    model every valid run but what they refuse of a mixture of experts (issue 22e,
    rules/reference/moe.py); a precision mode lists its gaps (``unsupported@autocast``)."""
    from estimator.rules.reference.moe import moe_unsupported

    return moe_unsupported(spec, sh)
