"""Training under torch.autocast(device, dtype) on fp32 weights (``Workload.autocast``).

Autocast picks a dtype per op (torch docs, "Automatic Mixed Precision package - torch.amp",
https://pytorch.org/docs/stable/amp.html, "Autocast Op Reference"):
  CPU, to the low dtype ("CPU Ops that can autocast to bfloat16"): conv1d/2d/3d, bmm, mm,
      linalg_vecdot, baddbmm, addmm, addbmm, linear, _convolution, matmul, conv_tbc,
      mkldnn_rnn_layer, conv_transpose1d/2d/3d, prelu, scaled_dot_product_attention,
      _native_multi_head_attention (fp16 uses the same list as bf16 on CPU).
  CPU, to fp32 ("CPU Ops that can autocast to float32"): the losses (cross_entropy_loss,
      nll_loss, mse_loss, ...), fft, linalg, pooling/padding ops, ... -- NOT softmax,
      log_softmax, layer_norm, pow or rsqrt: on CPU they run in their input's dtype.
  CUDA, to fp32 ("CUDA Ops that can autocast to float32"): also softmax, log_softmax,
      layer_norm, group_norm, pow, rsqrt, exp, log, sum, norm, ... ("CUDA Ops that can
      autocast to float16": the matmuls and convolutions, as on CPU).
  Other ops run in the widest dtype of their inputs (x + y with an fp32 x gives fp32).
Every prediction uses the CPU lists (the only ones measured, tgauge validate on CPU); on
CUDA the differences are listed in ``Estimate.unchecked`` (``cuda_differences``).

What that means for the reference model (reference_model/), measured with the profiler's
saved-tensor hooks (docs/formulas.md, "Autocast"):
  - the residual stream stays fp32 (the embeddings are fp32; x + branch promotes), so the
    norms run in fp32 on it and save what they save in fp32 training;
  - every nn.Linear casts its input to the low dtype: an input from the fp32 stream (a norm
    output) is cast once PER LINEAR (q, k, v, gate, up, lm_head each save their own copy;
    autocast caches only casts of leaf tensors), an input that a matmul made is already low;
  - every nn.Linear's weight is cast once per forward (the cast cache, cleared when the
    autocast region ends) and that copy [d_out, d_in] is saved for backward (the bias copy
    is cached until the region ends but not saved);
  - q, k, v, scores, probabilities, the FFN's inner tensors and the rotary tables (cast to
    q's dtype) are low; the loss (cross_entropy_loss, on both fp32 lists) casts the logits
    to fp32 and saves an fp32 log-softmax.
Parameters, gradients and optimizer states stay fp32 (gradients reach the fp32 weights
through the cast's backward). GradScaler (fp16 on CUDA): its scale (fp32 [1]), growth tracker
(int32 [1]) and per-device found-inf (fp32 [1]) are 12 bytes, not counted.
Not modelled under autocast (UnsupportedError): encoder-decoder, patch input, relative
position bias (its fp32 bias promotes the scores), dropout, checkpointing, pooler / MLM
head transform, fused chunked attention (the math sdpa upcasts its 5-D blocks to fp32:
measured, its saved set is twice the low-dtype one).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import bits
from estimator.spec.model import ModelSpec


def low_bytes(sh: Shapes) -> int:
    """Bytes per element of the autocast dtype (bf16, fp16: 2)."""
    return bits(sh.autocast) // 8


@register("saved.linear@autocast", "reference")
def autocast_linear_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, d_out: int,
                          stream: bool, fresh: bool) -> Any:  # fmt: skip
    """torch.nn.functional.linear under autocast (the ``linear`` entry of the CPU list):
    cached_cast of the weight (a leaf: cast once, kept) and of the input (an fp32 stream
    input: a new low copy per linear), then addmm / mm, which saves both low tensors."""
    low = low_bytes(sh)
    x = n * d_in * low if stream or fresh else 0  # the input's own cast
    return x + d_out * d_in * low  # the weight's cast copy [d_out, d_in]


@register("live.autocast_bias_casts", "reference")
def bias_casts_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """The low copies of every nn.Linear's bias, held by autocast's cast cache until the
    autocast region ends (the end of the forward and loss): not saved, but live at the loss.
    Under LoRA the frozen biases are not cached (rule ``live.lora_cast_cache``, issue 20)."""
    if sh.finetune.lora:
        return rule("live.lora_cast_cache", spec)(spec, sh)  # rules/finetune_autocast.py
    per_layer = (spec.q_dim + 2 * spec.kv_dim) * spec.qkv_bias  # q, k, v
    per_layer += spec.d_model * spec.o_bias  # o_proj
    per_layer += (spec.d_ff * (2 if spec.gated else 1) + spec.d_model) * spec.ffn_bias  # up, down
    return spec.n_layers * per_layer * low_bytes(sh)


@register("live.autocast_loss", "reference")
def loss_moment_bytes(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Live at the loss beyond the states and the saved activations under autocast, n
    tokens into the LM head (measured with profiler.live on CPU):
      logits      the lm_head's output [n, V], low
      logits32    cross_entropy_loss's fp32 copy of it (held until the loss returns)
      head input  the final norm's fp32 output [n, d], held by Transformer.forward (the
                  lm_head saved its own low cast)
      biases      the cast cache's bias copies (bias_casts_bytes); the loss value (fp32 [])
    Transformer.forward's ``x`` = embed(input_ids) [n, d] fp32, held when embed_extras made
    a new tensor of it, is rule ``train.held`` (estimator/rules/reference/held.py), added to
    every forward moment (issue 18p; it was counted here, at the loss under autocast only)."""
    fp32 = 4
    t = n * spec.vocab_size * (low_bytes(sh) + fp32)
    t += n * spec.d_model * fp32
    return t + bias_casts_bytes(spec, sh) + fp32


@register("unsupported@autocast", "reference")
def unsupported_under_autocast(spec: ModelSpec, sh: Shapes) -> str | None:
    """What these rules do not model for the run ``sh`` under autocast (one line), else None."""
    why = unsupported(spec, sh)
    return f"autocast={sh.autocast!r} is not modelled for {why}" if why else None


def unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """Why the run ``sh`` of ``spec`` under autocast is not modelled, else None."""
    if spec.arch == "encoder-decoder":
        return "encoder-decoder models (the cross-attention casts of the encoder output)"
    if spec.is_patch_input:
        return "patch input (conv2d under autocast)"
    if spec.position == "relative":
        return "relative position bias (its fp32 bias promotes the scores to fp32)"
    if spec.pooler or spec.head_transform:
        return "a pooler or MLM head transform"
    if sh.dropout > 0:
        return "dropout (its masks in the branch's low dtype)"
    if sh.checkpointing != "none":
        return "activation checkpointing (the recompute under autocast)"
    if sh.last.pattern == "chunked" and sh.attention_impl == "fused":
        return "fused chunked attention (its 5-D blocks run the math sdpa, which upcasts to fp32)"
    if spec.n_experts:  # issue 22e
        return "a mixture of experts (the router's fp32 softmax, the experts' casts)"
    return None
