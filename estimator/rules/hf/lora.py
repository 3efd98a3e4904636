"""LoRA on the Hugging Face decoder classes (GPT-2, Llama; transformers 5.x, peft 0.21): what
their forward holds beside the LoRA path's own tensors (rule ``live.lora_moment``, the
FFN moment ``lora_ffn_moment`` of estimator/rules/finetune.py).

While the decoder layers run, the base model's forward keeps, saved by nothing once the
embeddings are frozen (measured with profiler.live on CPU, tests/tgauge/test_finetune_bars.py):
  mask        eager attention's float causal mask [b, 1, s, s] in the model dtype
              (masking_utils.create_causal_mask), its local until the base model returns
  embeddings  ``inputs_embeds`` [b, s, d] (LlamaModel.forward, GPT2Model.forward), and
              GPT-2's ``position_embeds`` = wpe(position_ids) [1, s, d]
  attn out    GPT2Block.forward's ``attn_output`` [b, s, d] (the attention's c_proj output,
              the matmuls' dtype), a local until the block returns (``HOLDS_ATTN_OUTPUT``,
              estimator/rules/hf/decoders_pass.py)
  cache       the DynamicCache a training forward builds, every layer's by the last layer's
              FFN: what rule ``live.loss_moment`` counts of it at the loss (estimator/rules/
              hf/decoders.py loss_moment_extra, hf/autocast.py), less the padded labels
"""

from __future__ import annotations

from typing import Any

from estimator.rules.finetune import lora_ffn_moment
from estimator.rules.hf.decoders import padded_labels_bytes
from estimator.rules.hf.decoders_pass import HOLDS_ATTN_OUTPUT
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec


@register("live.lora_moment", "hf")
def hf_lora_moment(
    spec: ModelSpec, sh: Shapes, acts: dict[str, Any], layer: Any = None
) -> Any | None:
    """``lora_ffn_moment`` (estimator/rules/finetune.py: the last layer's FFN) plus the module
    docstring's tensors (None where it is None); ``layer`` (the reference rule's) unused."""
    base = lora_ffn_moment(spec, sh, acts)
    if base is None:
        return None
    b, s, d, cb = sh.b, sh.s_dec, spec.d_model, sh.cb
    held = b * s * d * cb  # inputs_embeds
    if spec.position == "learned":
        held += s * d * cb  # GPT-2's wpe output
    if sh.attention_impl == "eager":
        held += b * s * s * cb  # the causal mask
    if spec.hf_architecture in HOLDS_ATTN_OUTPUT:
        held += b * s * d * sh.ib  # the last block's attn_output
    if spec.lm_head:  # the cache (what the loss moment adds, less the padded labels)
        held += rule("live.loss_moment", spec, sh)(spec, sh) - padded_labels_bytes(sh)
    return base + held
