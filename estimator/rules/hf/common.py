"""Rules every Hugging Face class shares (``ModelSpec.implementation == "hf"``), registered per
module kind in estimator/rules/registry.py; the family modules beside this one hold the rest.
Each rule names the code it mirrors (transformers 5.x)."""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec


@register("saved.eager_mask", "hf")
def eager_mask_saved(spec: ModelSpec, sh: Shapes, entries: Any, masked: bool) -> Any:
    """HF builds one additive float mask per forward (masking_utils.create_causal_mask) and
    eager attention adds it to the scores (``attn_weights + causal_mask``): an add saves
    nothing, so no layer keeps a mask."""
    return 0


def buffer_dtype(sh: Shapes) -> str:
    """The dtype of a model's floating buffers: model.to(dtype) (tgauge/hf_models.py) casts
    them with the weights; fp32 under a weight format that is not a float dtype."""
    return sh.dtype if sh.dtype in ("fp32", "fp16", "bf16") else "fp32"


def positions_from_buffer(spec: ModelSpec, sh: Shapes, stack: str, s: Any) -> Any:
    """Position ids read from a buffer (BERT's ``position_ids[:, :s]``, a view) or no lookup
    at all (ViT adds its table to the patches): no ids saved (rule ``saved.positions`` of
    the BERT and ViT classes)."""
    return 0
