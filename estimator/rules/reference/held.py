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
    logits, freed with its output before backward (reference: none)."""
    return 0


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
    model every valid run; a precision mode lists its gaps (``unsupported@autocast``)."""
    return None
