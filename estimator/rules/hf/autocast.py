"""The Hugging Face decoder-only classes (GPT-2, Llama; transformers 5.x) trained under
torch.autocast on CPU (``Workload.autocast``): rules registered as ``kind@autocast`` under the
"hf" implementation (estimator/rules/registry.py takes them before the reference's autocast
rules of estimator/rules/autocast.py and the HF fp32 rules of estimator/rules/hf/decoders.py).

What the real classes save beyond / instead of the reference model under autocast, measured
with the profiler's saved-tensor hooks (tests/tgauge/test_hf_autocast.py, CPU, bf16):
  c_attn        GPT-2's fused projection (pytorch_utils.Conv1D: addmm(bias, x, weight)) casts
                its fp32 input ONCE for q, k and v; its weight copy [d, 3 d] is the three
                projections' copies summed (``hf_linear_saved``)
  gelu_new      written out of elementwise ops on c_fc's low output: its four saved tensors
                are in the low dtype (``hf_ffn_act_saved``)
  eager core    eager_attention_forward adds the model-dtype (fp32) float mask to the low
                scores (promoting them to fp32) and runs softmax(..., dtype=float32)
                .to(query.dtype): softmax saves its fp32 output [b, h, s, s_k] beyond the low
                copy that probs @ v saves (``hf_eager_softmax_saved``)
  sdpa          q, k, v, out in the low dtype, logsumexp fp32 (``hf_sdpa_saved``)
  rotary        LlamaRotaryEmbedding computes cos, sin with autocast disabled and returns them
                in the hidden states' dtype (fp32): the fp32 rule (saved.rotary.stack) holds
Everything else (norms, loss, the bias casts, the DynamicCache copies at the loss) is the
reference's autocast rule or the HF fp32 rule unchanged.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.autocast import autocast_linear_saved, bias_casts_bytes, low_bytes
from estimator.rules.hf.decoders import (
    WRITTEN_OUT_SAVES,
    builds_cache,
    cache_copies_unsaved,
    padded_labels_bytes,
    sdpa_saved_entries,
    sliding_window,
)
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec

FP32_BYTES = 4


@register("saved.linear@autocast", "hf")
def hf_linear_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, d_out: int,
                    stream: bool, fresh: bool) -> Any:  # fmt: skip
    """A fused q/k/v projection (``spec.fused_qkv``, GPT-2's c_attn) is one addmm: k and v
    (the stream input an earlier projection already cast, ``fresh`` False) add only their
    share of the weight's copy; other linears: the reference autocast rule (a cast per
    linear of an fp32 stream input)."""
    if spec.fused_qkv and stream and not fresh:
        return d_out * d_in * low_bytes(sh)
    return autocast_linear_saved(spec, sh, n, d_in, d_out, stream, fresh)


@register("saved.ffn.act@autocast", "hf")
def hf_ffn_act_saved(spec: ModelSpec, sh: Shapes, n: Any, width: Any = None) -> Any:
    """The activation runs on the up projection's low output: a written-out one
    (``WRITTEN_OUT_SAVES``) saves its tensors [n, d_ff] (or [n, ``width``]) in that dtype,
    F.gelu / F.silu their input."""
    width = spec.d_ff if width is None else width
    return WRITTEN_OUT_SAVES.get(spec.activation_fn or "", 1) * n * width * low_bytes(sh)


@register("saved.sdpa@autocast", "hf")
def hf_sdpa_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any, masked: bool,
                  fused_mask: bool, window: int | None, cross: bool) -> dict[str, Any]:  # fmt: skip
    """sdpa_attention_forward under autocast (scaled_dot_product_attention is on the CPU low
    list): the saved set of the fp32 rule (estimator/rules/hf/decoders.sdpa_saved) with q,
    k, v, out and the float mask in the low dtype (fp32 q, k after rotary are cast), the
    logsumexp fp32."""
    entries = sdpa_saved_entries(spec, sh, b, s, s_k, fused_mask, window)
    lse = b * spec.n_heads * s * FP32_BYTES
    return {"sdpa": entries * low_bytes(sh) + lse, "o_proj": 0}


@register("saved.eager_softmax@autocast", "hf")
def hf_eager_softmax_saved(spec: ModelSpec, sh: Shapes, b: Any, entries: Any) -> Any:
    """eager_attention_forward: ``softmax(scores + mask, dtype=torch.float32)`` saves its fp32
    output [b, h, entries]; ``.to(query.dtype)`` makes the low copy probs @ v saves (counted
    as the probabilities)."""
    return b * spec.n_heads * entries * FP32_BYTES


@register("live.autocast_loss", "hf")
def hf_loss_moment_bytes(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Live at the loss under autocast beyond the states and the saved activations, n tokens
    into the LM head: the reference's set (estimator/rules/autocast.loss_moment_bytes: the low
    logits, their fp32 copy, the fp32 head input ``outputs.last_hidden_state``, the bias
    copies of the cast cache, the loss value) without the embeddings: the base model frees
    inputs_embeds (+ GPT-2's wpe output) when it returns, before the LM head."""
    t = n * spec.vocab_size * (low_bytes(sh) + FP32_BYTES) + n * spec.d_model * FP32_BYTES
    return t + bias_casts_bytes(spec, sh) + FP32_BYTES


@register("live.loss_moment@autocast", "hf")
def hf_loss_moment_extra(spec: ModelSpec, sh: Shapes) -> Any:
    """The fp32 rule (estimator/rules/hf/decoders.loss_moment_extra: the padded labels, the
    DynamicCache a training forward builds) with the cache's dtypes under autocast: v is the
    low v_proj output; k after apply_rotary_pos_emb is fp32 (q, k times the fp32 cos, sin),
    else low. A cache storage the attention kernel did not save is extra: k and v when it
    works on repeat_kv copies (``cache_copies_unsaved``), and a fp32 k in any case (eager's
    matmul and sdpa save their own low cast of it)."""
    if not spec.lm_head or spec.arch != "decoder":
        return 0
    b, s, lb = sh.b, sh.s, low_bytes(sh)
    extra = padded_labels_bytes(sh)
    if not builds_cache(sh):
        return extra
    copies = cache_copies_unsaved(spec, sh, sliding_window(sh))
    k_bytes = FP32_BYTES if spec.position == "rotary" else lb
    per_pos = spec.n_kv_heads * spec.head_dim
    k = b * s * per_pos * k_bytes if copies or k_bytes != lb else 0
    v = b * s * per_pos * lb if copies else 0
    return extra + spec.n_decoder_layers * (k + v)
