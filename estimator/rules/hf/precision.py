"""The Hugging Face classes' norms and loss in every model dtype: fp32, under autocast, and pure
bf16 / fp16 (``Workload.dtype`` low with no master weights: the model itself in that dtype).
transformers upcasts inside these modules, so what they save follows the code, not the model
dtype (transformers 5.x):

  LlamaRMSNorm   models/llama/modeling_llama.py (Mistral's is the same code): ``x.to(float32)``
                 (a copy when x is low), ``pow(2).mean``, ``x32 * rsqrt(var + eps)``,
                 ``weight * hidden.to(input_dtype)``: saves the fp32 copy (pow, mul), rsqrt
                 [n, 1] fp32, the normalized output in the input dtype (the weight's mul)
  T5LayerNorm    models/t5/modeling_t5.py: the variance from ``x.to(float32).pow(2)``, then
                 ``x * rsqrt`` on the input itself (low x fp32 -> fp32), ``.to(weight.dtype)``:
                 saves the fp32 copy (pow), x and rsqrt (mul), the normalized low output
  loss           loss/loss_utils.ForCausalLMLoss: ``logits.float()`` before cross_entropy: the
                 log-softmax it saves and total_weight are fp32 whatever the logits' dtype;
                 BertForMaskedLM, T5 and BART call nn.CrossEntropyLoss on the logits as they
                 are (no upcast)
  eager softmax  Llama's, Mistral's and ViT's eager_attention_forward:
                 ``softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)``: in a low
                 model dtype softmax saves its fp32 output beside the low probabilities
                 probs @ v saves (GPT-2, BERT, BART, T5: softmax in the scores' dtype)
In fp32 the copies are the tensors themselves and every rule here reduces to the reference's.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.reference.backward import Walker
from estimator.rules.reference.backward import norm as reference_norm_backward
from estimator.rules.reference.saved import norm_saved as reference_norm_saved
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
#: classes whose loss is loss_utils.ForCausalLMLoss / ForMaskedLMLoss (``logits.float()``)
#: (BertForMaskedLM calls nn.CrossEntropyLoss on its prediction scores as they are)
UPCAST_LOSS = frozenset({"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM",
                         "MixtralForCausalLM"})  # fmt: skip
#: classes whose RMSNorm is T5LayerNorm (the others: LlamaRMSNorm)
T5_NORM = frozenset({"T5ForConditionalGeneration", "T5Model", "T5EncoderModel"})


#: classes whose eager attention runs softmax(..., dtype=torch.float32).to(query.dtype)
FP32_SOFTMAX = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "ViTModel", "ViTForImageClassification",
    "MixtralForCausalLM",  # issue 22: modeling_mixtral.eager_attention_forward
})  # fmt: skip


def fp32_softmax_copy(spec: ModelSpec, sh: Shapes) -> bool:
    """Whether eager softmax makes an fp32 output apart from the probabilities: a class of
    ``FP32_SOFTMAX`` in a low model dtype (in fp32 the ``.to`` returns the same tensor)."""
    return spec.hf_architecture in FP32_SOFTMAX and sh.cb != FP32_BYTES


def softmax_converts_input(sh: Shapes) -> bool:
    """aten/src/ATen/native/SoftMax.cpp softmax(input, dim, dtype=float32) on a low input:
    _softmax of ``input.toType(float)``, a copy live beside its output, but for CUDA fp16,
    whose _softmax(half_to_float) reads the input itself."""
    return not (sh.device == "cuda" and sh.dtype == "fp16")


@register("saved.eager_softmax", "hf")
def hf_eager_softmax_saved(spec: ModelSpec, sh: Shapes, b: Any, entries: Any) -> Any:
    """softmax(dtype=float32) saves its fp32 output [b, h, entries] beside the low copy
    probs @ v saves (``fp32_softmax_copy``); else nothing beyond the probabilities."""
    return b * spec.n_heads * entries * FP32_BYTES if fp32_softmax_copy(spec, sh) else 0


@register("loss.upcast", "hf")
def upcasts_loss(spec: ModelSpec) -> bool:
    """Whether the class's loss casts the logits to fp32 first (``UPCAST_LOSS``)."""
    return spec.implementation == "hf" and spec.hf_architecture in UPCAST_LOSS


@register("saved.norm", "hf")
def hf_norm_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """LlamaRMSNorm: the fp32 copy [n, d], rsqrt [n, 1] fp32, the normalized output in the
    input dtype; T5LayerNorm: the same plus the input itself (its mul's other operand);
    nn.LayerNorm: the reference rule. fp32: the copy is the input (the reference's count)."""
    if spec.norm != "rmsnorm" or sh.cb == FP32_BYTES:
        return reference_norm_saved(spec, sh, n)
    nd = n * spec.d_model
    low_input = nd * sh.cb if spec.hf_architecture in T5_NORM else 0
    return nd * FP32_BYTES + n * FP32_BYTES + nd * sh.cb + low_input


@register("saved.loss", "hf")
def hf_loss_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """cross_entropy on ``logits.float()`` (``upcasts_loss``): the log-softmax [n, V] and
    total_weight fp32, the targets int64; else on the logits' own dtype. A causal LM's
    targets are loss_utils.ForCausalLMLoss's ``labels[..., 1:].contiguous()`` of the padded
    [b, s + 1] labels: at b = 1 already contiguous, a view keeping the whole padded storage
    (issue 22d, measured: one more int64 than [1, s])."""
    cb = FP32_BYTES if upcasts_loss(spec) else sh.cb
    view = INDEX_BYTES if spec.arch == "decoder" and spec.lm_head and sh.b == 1 else 0
    return n * spec.vocab_size * cb + n * INDEX_BYTES + view + cb


@register("backward.norm", "hf")
def hf_norm_backward(bw: Walker, name: str, c: Any, n: Any) -> Any:
    """LlamaRMSNorm's backward in a low model dtype (``c`` the output's grad, freed); fp32,
    LayerNorm and T5LayerNorm: the reference rule. MulBackward0 of weight * y (grad * weight,
    grad * y for dw; y freed), ToCopyBackward0 to fp32, MulBackward0 of x32 * r (grad * r,
    grad * x32 summed to r's grad [n, 1]), RsqrtBackward0 / MeanBackward1 (expand / d),
    PowBackward0 (pow, * 2, * grad), x32's two grads summed, ToCopyBackward0 to the input
    dtype. -> the input's grad."""
    spec = bw.spec
    if spec.norm != "rmsnorm" or bw.cb == FP32_BYTES or spec.hf_architecture in T5_NORM:
        return reference_norm_backward(bw, name, c, n)
    live, nd = bw.live, n * spec.d_model
    lo, f, col = nd * bw.cb, nd * FP32_BYTES, n * FP32_BYTES
    bw.grad(name)
    live.take(lo, lo)  # grad * weight; grad * y (summed into dw)
    live.drop(lo, c)
    bw.free(name, lo)  # y, saved by * weight
    live.take(f)  # ToCopyBackward0: y32's grad
    live.drop(lo)
    live.take(f, f, col)  # grad * r; grad * x32 -> sum: r's grad [n, 1]
    live.drop(f)
    live.drop(f)  # y32's grad
    live.take(col, col, col)  # rsqrt backward: pow, * -0.5, * grad
    live.drop(col, col, col)
    bw.free(name, col)  # r
    live.take(f)  # mean backward: expand / d
    live.drop(col)
    live.take(f, f, f)  # pow backward: x32 ** 1, * 2, * grad
    live.drop(f, f, f)
    bw.free(name)  # x32, saved by pow and the mul
    live.take(f)  # the two paths' grads summed
    live.drop(f, f)
    live.take(lo)  # ToCopyBackward0: the input's grad in its dtype
    live.drop(f)
    return lo


#: classes whose layers clamp fp16 hidden states: T5Block (``if hidden_states.dtype ==
#: torch.float16: ... torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)`` after each
#: sublayer) and BartEncoderLayer (the same after its FFN): torch.clamp saves its input and
#: the clamp values, a tensor per sublayer these rules do not count
FP16_CLAMP = ("T5ForConditionalGeneration", "BartForConditionalGeneration")


@register("unsupported", *FP16_CLAMP)
def fp16_clamp_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """A model in fp16 (``FP16_CLAMP``) is not modelled: one line naming the dtype."""
    if sh.compute_dtype == "fp16" and not sh.autocast:
        return (
            f"dtype='fp16' is not modelled for {spec.hf_architecture} (its layers clamp fp16 "
            "hidden states, torch.clamp saving a tensor per sublayer); bf16 and fp32 are"
        )
    return None
