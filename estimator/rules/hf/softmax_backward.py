"""The backward of Hugging Face's eager softmax in fp32 (bf16 / fp16 models, and under
torch.autocast): rule ``backward.softmax`` for the "hf" implementation.

eager_attention_forward (transformers/models/llama/modeling_llama.py; GPT-2's
modeling_gpt2.eager_attention_forward likewise) runs ``softmax(scores + mask, dim=-1,
dtype=torch.float32)`` (the fp32 float mask promotes low scores) and casts the output to the
value's dtype for ``probs @ V``: the softmax saves its fp32 output, probs @ V its low copy
(rule ``saved.eager_softmax``, estimator/rules/hf/precision.py, hf/autocast.py). Backward,
as autograd runs it (measured with profiler.live on CPU):
  probs @ V     grad of the low probabilities [b, h, s, s_k]; its node frees the low copy
  ToCopyBackward0   that grad cast to fp32 (the low one freed after)
  SoftmaxBackward0  _softmax_backward_data: an fp32 grad input beside the fp32 grad and the
                saved fp32 output, both freed after
  AddBackward0  the mask add promoted the low scores: its grad cast back to low
In fp32 (no copy apart) the reference step holds.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.reference.backward import Walker
from estimator.rules.reference.backward import softmax as reference_softmax
from estimator.rules.registry import register, rule

FP32_BYTES = 4


@register("backward.softmax", "hf")
def hf_softmax(bw: Walker, core: str, scores: Any, entries: Any) -> None:
    """Module docstring; ``entries``: b h s s_k."""
    if not rule("saved.eager_softmax", bw.spec, bw.sh)(bw.spec, bw.sh, 1, 1):  # no fp32 copy
        reference_softmax(bw, core, scores, entries)
        return
    live, f32 = bw.live, entries * FP32_BYTES
    bw.free(core, scores)  # the low probabilities, freed with probs @ V's node
    live.take(f32)  # ToCopyBackward0: the fp32 grad
    live.drop(scores)
    live.take(f32)  # SoftmaxBackward0
    live.drop(f32)
    bw.free(core, f32)  # the fp32 softmax output
    live.take(scores)  # AddBackward0: the grad cast back to the low scores' dtype
    live.drop(f32)
