"""Gradient checkpointing on the Hugging Face decoder classes (issue 20c; transformers 5.24,
torch 2.13): what ``GradientCheckpointingLayer`` (transformers/modeling_layers.py) keeps and
what its recompute holds.

``GradientCheckpointingLayer.forward_with_checkpointing`` calls
``self._gradient_checkpointing_func(partial(forward, self, **kwargs), *args)``: only the
positional arguments are the checkpoint's inputs. Both torch.utils.checkpoint variants keep
their tensor inputs through ``save_for_backward`` (non-reentrant: ``_NoopSaveInputs``;
reentrant: ``CheckpointFunction.forward``'s ``ctx.save_for_backward(*tensor_inputs)``), so the
outer saved-tensor hooks see them:
  Llama       LlamaModel.forward passes ``hidden_states`` alone positionally: each layer's input
  GPT-2       GPT2Model.forward passes ``hidden_states, cache (None), causal_mask,
              encoder_hidden_states (None)`` positionally: with eager attention the float
              causal mask [b, 1, s, s] (masking_utils.create_causal_mask, the activations'
              dtype) is kept too, one storage shared by every layer's checkpoint; sdpa builds
              none (is_causal)

Which variant runs: ``activation_checkpointing_enable()`` (gradient_checkpointing_enable)
without kwargs is non-reentrant (modeling_utils.py ``_activation_checkpointing_enable``:
``{"use_reentrant": False}``); peft's ``prepare_model_for_kbit_training`` passes
``gradient_checkpointing_kwargs={}`` (peft/utils/other.py), so torch's default
``use_reentrant=True`` runs (torch/utils/checkpoint.py ``checkpoint``), with
``enable_input_require_grads`` so the layers' input requires grad.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec


@register("saved.checkpoint_args", "reference")
def checkpoint_args(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """Bytes the checkpoints keep beside each layer's input: reference_model/layers.py
    ``checkpoint(layer, *args)`` passes nothing else that is a new tensor: 0."""
    return 0


@register("saved.checkpoint_args", "GPT2LMHeadModel", "GPT2Model")
def gpt2_checkpoint_args(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """GPT2Model.forward's positional ``causal_mask`` (module docstring): eager's float
    [b, 1, s, s] in the activations' dtype, once for all layers."""
    return sh.b * s * s * sh.cb if sh.attention_impl == "eager" else 0
