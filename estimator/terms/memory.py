"""Memory of one step, per named term (bytes), and the step's input tensors.

Terms (docs/formulas.md):
  weights                    every parameter tensor in ``dtype``: ceil(numel * bits / 8)
                             (int4 packs 2 per byte; norms and embeddings included); qlora:
                             weights.base4bit (+ quant state) and the 16-bit rest
  weights.adapters           LoRA / QLoRA: the adapters (fp32, estimator/terms/finetune.py)
  buffers                    inference: the model's buffers (rule ``memory.buffers``)
  gradients                  train: one gradient per trainable parameter, in its dtype
  optimizer.<state>          per optimizer (estimator/terms/optimizer.py): exp_avg, exp_avg_sq,
                             step (adam/adamw); momentum_buffer (sgd-momentum); row_var,
                             col_var, variance, step (adafactor); state1, state2, absmax1/2,
                             qmap1/2 (adamw-8bit); fp32 under master_weights, else the weight dtype
  optimizer.master_weights   mixed precision: fp32 copy of every parameter
  activations.<module>       train: tensors saved for backward (estimator/terms/activations.py)
  kv_cache.self, kv_cache.cross    prefill / decode with a cache (estimator/terms/kv_cache.py)
When they are live, and the peak, is estimator/replay/peak.py's timeline.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from estimator.rules.registry import rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec
from estimator.terms.activations import activations
from estimator.terms.finetune import adapter_weight_bytes, gradient_bytes, trainable_shapes
from estimator.terms.kv_cache import kv_cache
from estimator.terms.optimizer import state_terms as optimizer_states
from estimator.terms.params import param_tensor_numels
from estimator.terms.quant_bnb import qlora_base_terms

Terms = dict[str, Any]


@functools.lru_cache(maxsize=256)  # depends on the spec only; hot in sweeps
def bytes_of_params(spec: ModelSpec, dtype: str) -> int:
    """Every distinct parameter tensor of ``spec`` in ``dtype``."""
    return sum(nbytes(numel, dtype) for numel in param_tensor_numels(spec))


def weight_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """Every parameter in ``dtype``, or as a quantized checkpoint ships them
    (``quant``: estimator/terms/quant.py)."""
    if sh.quant is None:
        return bytes_of_params(spec, sh.dtype)
    from estimator.terms.quant import quantized_weight_bytes

    everything = bytes_of_params(spec, sh.dtype)
    return quantized_weight_bytes(spec, sh.quant, sh.dtype, sh.group_size, everything)


def state_terms(spec: ModelSpec, sh: Shapes) -> Terms:
    """weights, gradients and optimizer states (inference: weights and buffers)."""
    t = {"weights": weight_bytes(spec, sh)}
    if not sh.training:
        if buffers := rule("memory.buffers", spec)(spec, sh):
            t["buffers"] = buffers
        return t
    if sh.finetune.kind != "full":  # issue 20: only what is trained (terms/finetune.py)
        return t | finetune_state_terms(spec, sh)
    t["gradients"] = bytes_of_params(spec, sh.dtype)
    t.update(optimizer_states(spec, sh))  # per optimizer (estimator/terms/optimizer.py)
    if sh.master_weights:
        t["optimizer.master_weights"] = bytes_of_params(spec, "fp32")
    return t


def finetune_state_terms(spec: ModelSpec, sh: Shapes) -> Terms:
    """Fine-tuning (issue 20): ``weights.adapters`` (LoRA, in the adapter dtype), gradients
    and optimizer states of the trainable tensors only, the master copy of those; a qlora base
    replaces ``weights`` (estimator/terms/quant_bnb.py)."""
    t: Terms = {}
    if sh.finetune.kind == "qlora":
        t.update(qlora_base_terms(spec, sh))
    if adapters := adapter_weight_bytes(spec, sh):
        t["weights.adapters"] = adapters
    t["gradients"] = gradient_bytes(spec, sh)
    t.update(optimizer_states(spec, sh))
    if sh.master_weights:
        t["optimizer.master_weights"] = sum(nbytes(math.prod(s), "fp32")
                                            for s in trainable_shapes(spec, sh))  # fmt: skip
    return t


def memory(spec: ModelSpec, sh: Shapes) -> Terms:
    """Bytes per term of one step; see the module docstring."""
    t = state_terms(spec, sh)
    if sh.training:
        t.update({f"activations.{k}": v for k, v in activations(spec, sh).items()})
    cache = kv_cache(spec, sh)
    if "decoder.layers.self_attn" in cache:
        t["kv_cache.self"] = cache["decoder.layers.self_attn"]
    if "decoder.layers.cross_attn" in cache:
        t["kv_cache.cross"] = cache["decoder.layers.cross_attn"]
    return t


def group(terms: Terms, prefix: str) -> Any:
    """Sum of the terms named ``prefix`` or starting with ``prefix + '.'``."""
    return sum(v for k, v in terms.items() if k == prefix or k.startswith(prefix + "."))


def input_bytes(spec: ModelSpec, sh: Shapes) -> Any:
    """The step's input tensors (reference_model.inputs.make_inputs), live all step long."""
    b, s = sh.b, sh.s
    if spec.is_patch_input:
        t = b * spec.n_channels * spec.image_size**2 * sh.cb  # pixel_values
    else:
        t = b * s * INDEX_BYTES  # input_ids [b, s]
    if spec.n_token_types:
        t += rule("inputs.token_type", spec)(spec, sh)
    s_dec = sh.s_dec
    if spec.arch == "encoder-decoder":
        t += b * s_dec * INDEX_BYTES  # decoder_input_ids [b, s_t]
    if sh.training and spec.lm_head:
        t += b * (s_dec if spec.arch != "encoder" else s) * INDEX_BYTES  # labels
    if sh.training and spec.n_labels:
        t += b * INDEX_BYTES  # labels [b]
    return t


def decode_input_bytes(spec: ModelSpec, sh: Shapes) -> Any:
    """Decode inputs: the prompt ids [b, P] (+ the source ids [b, s], encoder-decoder)."""
    t = sh.b * sh.prompt * INDEX_BYTES
    if spec.arch == "encoder-decoder":
        t += sh.b * sh.s * INDEX_BYTES
    return t
