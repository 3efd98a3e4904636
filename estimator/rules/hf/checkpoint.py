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
``enable_input_require_grads`` so the layers' input requires grad; so does
``_activation_checkpointing_enable`` itself on an input_ids model (``needs_embedding_grads``):
under either, the embeddings' output requires grad (``FinetuneShapes.input_grad``).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.decoders import sdpa_gets_mask, sliding_window
from estimator.rules.hf.precision import FP32_BYTES, T5_NORM
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
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


def reentrant(sh: Shapes) -> bool:
    """Whether the checkpoint is torch's reentrant one: kbit_prep's use_gradient_checkpointing
    (module docstring: peft passes no use_reentrant); tgauge's HF target otherwise enables
    transformers' default, the non-reentrant one (tgauge/targets.py ``_finetuned``)."""
    return sh.checkpointing == "full" and sh.finetune.kbit_prep


@register("live.checkpoint_held", "reference")
def checkpoint_held(spec: ModelSpec, sh: Shapes) -> Any:
    """Bytes the checkpointed layers' closures keep from the forward until the first layer's
    backward: reference_model/layers.py checkpoints ``layer`` on positional tensors only
    (saved, counted in the saved set): 0."""
    return 0


def _mask(spec: ModelSpec, sh: Shapes) -> Any:
    """masking_utils.create_causal_mask's result (estimator/rules/hf/decoders_pass.py
    ``Pass.mask``): eager a float [b, 1, s, s]; sdpa none, or a bool [1, 1, s, s] once a
    sliding window reaches the keys."""
    s = sh.s_dec
    if sh.attention_impl == "eager":
        return sh.b * s * s * sh.cb
    window = sliding_window(sh)
    return s * s if sdpa_gets_mask(s, window is not None, window) else 0


@register("live.checkpoint_held", "LlamaForCausalLM", "MistralForCausalLM")
def llama_checkpoint_held(spec: ModelSpec, sh: Shapes) -> Any:
    """LlamaModel.forward passes ``attention_mask=causal_mask, position_embeddings=(cos, sin),
    position_ids`` as keywords: ``partial(forward, self, **kwargs)`` (GradientCheckpointingLayer)
    is the checkpoint's function, kept by its node (non-reentrant: the recompute's frame;
    reentrant: ``ctx.run_function``) until that layer's backward, so the first layer's keeps
    them to the end of the layers' backward, saved by nothing: the causal mask (``_mask``),
    LlamaRotaryEmbedding's cos and sin [1, s, d_h] in the activations' dtype, and
    ``position_ids`` = arange(s) + past_seen_tokens [s] int64 (unsqueezed: a view)."""
    s = sh.s_dec
    rd = spec.rotary_dim or spec.head_dim
    return _mask(spec, sh) + 2 * s * rd * sh.cb + s * INDEX_BYTES


@register("live.checkpoint_held", "GPT2LMHeadModel", "GPT2Model")
def gpt2_checkpoint_held(spec: ModelSpec, sh: Shapes) -> Any:
    """GPT2Model.forward passes the mask positionally (saved: ``gpt2_checkpoint_args``) and
    ``position_ids`` = arange(s) + past_seen_tokens [s] int64 as a keyword: that one is kept
    (``llama_checkpoint_held``'s reasoning). Under enable_input_require_grads' hook
    (``FinetuneShapes.input_grad``) ``inputs_embeds`` = wte(input_ids) [b, s, d] is a leaf
    that requires grad, held by its AccumulateGrad node until backward ends: on GPT-2 it is
    not layer 0's input (that is inputs_embeds + position_embeds), so it is kept beside it
    (on Llama it is layer 0's input, counted in the saved set)."""
    embeds = sh.b * sh.s_dec * spec.d_model * sh.cb if sh.finetune.input_grad else 0
    return sh.s_dec * INDEX_BYTES + embeds


@register("live.checkpoint_output", "reference")
def checkpoint_output(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Bytes a checkpointed layer's recompute holds beyond its saved set through its own
    backward: the non-reentrant checkpoint stops once the last saved tensor is packed
    (torch/utils/checkpoint.py, _StopRecomputationError): 0."""
    return 0


@register("live.checkpoint_output", "hf")
def hf_checkpoint_output(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Under the reentrant checkpoint (``reentrant``) CheckpointFunction.backward recomputes
    the whole layer (``outputs = ctx.run_function(*detached_inputs)``) and keeps ``outputs``,
    the layer's output [n, d] in the activations' dtype, through
    ``torch.autograd.backward(outputs_with_grad, args_with_grad)``; its frame keeps ``args``,
    the output's grad, too: the backward walk (estimator/replay/backward.py ``sublayer``) does
    not free it once the first sublayer's backward has summed it into the residual's grad,
    but at the layer's end. Non-reentrant: 0."""
    return n * spec.d_model * sh.cb if reentrant(sh) else 0


@register("saved.norm_saves_input", "reference")
def norm_saves_input(spec: ModelSpec, sh: Shapes) -> bool:
    """Whether a layer's first norm saves the layer's input tensor itself (so the
    checkpoint's kept input and that saved tensor are one storage, estimator/replay/
    backward.py ``_recomputed``): the reference model's norms save their input: True."""
    return True


@register("saved.norm_saves_input", "hf")
def hf_norm_saves_input(spec: ModelSpec, sh: Shapes) -> bool:
    """LlamaRMSNorm.forward saves ``hidden_states.to(torch.float32)``: a copy when the
    activations are 16-bit, the input itself in fp32 (rule ``saved.norm``, rules/hf/
    precision.py); T5LayerNorm also saves the low input; nn.LayerNorm saves its input."""
    low = sh.cb != FP32_BYTES
    return not (spec.norm == "rmsnorm" and low and spec.hf_architecture not in T5_NORM)
