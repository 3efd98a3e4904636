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


@register("train.held", "hf")
def hf_held_in_training(spec: ModelSpec, sh: Shapes) -> Any:
    """A transformers ...ForCausalLM / ...ForMaskedLM class runs its head and loss after
    the base model's forward has returned (e.g. LlamaForCausalLM.forward: ``outputs =
    self.model(...)``, then ``self.lm_head(hidden_states)`` and ``self.loss_function``),
    so the base model's locals (its embedding output) are gone at the loss: none (T5
    registers its own, estimator/rules/hf/t5.py)."""
    return 0


@register("fsdp.last_layer_param", "hf")
def hf_last_layer_param(spec: ModelSpec) -> str:
    """The module whose tensor a decoder layer registers last (FSDP2 lists it last in the
    layer's FSDPParamGroup): LlamaDecoderLayer.__init__ (transformers/models/llama/
    modeling_llama.py) registers self_attn, mlp, input_layernorm, then
    post_attention_layernorm (the spec's ``ffn_norm``); the Llama-style decoders share it."""
    return "ffn_norm"
