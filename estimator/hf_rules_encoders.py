"""Rules of the Hugging Face encoder and encoder-decoder classes (BERT, T5, BART, ViT), keyed
by the transformers class (``ModelSpec.hf_architecture``) where one family's code differs from
the others (estimator/implementations.py looks up the class, then "hf", then the reference).

Each rule names the code it mirrors (transformers 5.x, models/<family>/modeling_<family>.py)
and is measured in tests/tgauge/test_hf_rules_encoders.py:
  BERT   BertEmbeddings.forward: position ids are a slice of the ``position_ids`` buffer
         (nothing saved); token type ids are gathered from the all-zero buffer, [1, s] int64,
         expanded to [b, s] (one [s] storage saved) and not an input of the step.
  BART   BartLearnedPositionalEmbedding.forward: the encoder builds arange(s).expand(b, s) +
         offset ([b, s] int64 saved); the decoder passes arange(s) + cache_length ([1, s]).
  ViT    ViTEmbeddings.forward adds the position table itself (no ids saved).
  T5     T5Stack.forward: only block 0 computes the relative bias (compute_bias), the other
         blocks reuse it: the bucket ids [s, s_k] int64 are saved once per stack, under
         {stack}.pos. With sdpa (integrations/sdpa_attention.py) the bias is an attn_mask that
         requires grad, so torch runs the math kernel: it saves q and k scaled (copies), the
         softmax output, v, and, in the causal decoder, the bool mask of
         create_position_bias_mask's torch.where; its output is copied for ``o``. The
         cross-attentions share one zero bias [1, h, s, s_src] as an attn_mask without grad
         (the flash kernel): saved once, by the first block.
"""

from __future__ import annotations

from estimator.activations import _ib
from estimator.dtypes import INDEX_BYTES
from estimator.implementations import register
from estimator.spec import ModelSpec, Workload

BERT = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")
BART = ("BartForConditionalGeneration",)
T5 = ("T5ForConditionalGeneration",)
VIT = ("ViTModel", "ViTForImageClassification")


@register("saved.positions", *BERT, *VIT)
def positions_from_buffer(spec: ModelSpec, workload: Workload, stack: str, s: int) -> int:
    """BertEmbeddings: ``self.position_ids[:, :s]`` (a buffer view); ViTEmbeddings adds the
    table to the patches (no lookup): no ids saved."""
    return 0


@register("saved.positions", *BART)
def bart_positions(spec: ModelSpec, workload: Workload, stack: str, s: int) -> int:
    """BartLearnedPositionalEmbedding: encoder ids arange(s).expand(b, s) + 2 ([b, s] int64);
    the decoder's arange(s) + cache_length, unsqueezed, + 2 ([1, s])."""
    rows = workload.batch_size if stack == "encoder" else 1
    return rows * s * INDEX_BYTES


@register("saved.token_type", *BERT)
def bert_token_type(spec: ModelSpec, workload: Workload, s: int) -> int:
    """gather(token_type_ids buffer, position_ids) is a new [1, s] int64, expanded to [b, s]."""
    return s * INDEX_BYTES


@register("inputs.token_type", *BERT)
def bert_token_type_input(spec: ModelSpec, workload: Workload) -> int:
    """The step passes no token_type_ids (the embeddings build them from a buffer)."""
    return 0


@register("saved.relative_bias", *T5)
def t5_relative_bias(spec: ModelSpec, workload: Workload, stack: str, s: int) -> tuple[int, int]:
    """T5Attention.compute_bias runs in block 0 only: its bucket ids [s, s] int64 once."""
    return 0, s * s * INDEX_BYTES


@register("saved.sdpa", *T5)
def t5_sdpa(spec: ModelSpec, workload: Workload, b: int, s: int, s_k: int, masked: bool,
            fused_mask: bool, window: int | None, cross: bool) -> dict[str, int]:  # fmt: skip
    """Self-attention: the relative bias is an attn_mask that requires grad: math sdpa saves
    q * sqrt(scale), k * sqrt(scale) [b,h,s,d_h] (copies), softmax [b,h,s,s_k], v (a view
    of v's output), and the causal where's bool [s, s_k]; ``o`` gets a copy of its output.
    Cross-attention: the flash kernel's saves (the shared zero mask: saved.cross_mask)."""
    cb, h, h_kv, d_h = _ib(workload), spec.n_heads, spec.n_kv_heads, spec.head_dim
    if cross:
        lse = b * h * s * 4  # logsumexp [b, h, s] fp32
        return {"sdpa": (2 * b * s * h * d_h + 2 * b * s_k * h_kv * d_h) * cb + lse, "o_proj": 0}
    qk = b * h * (s + s_k) * d_h * cb
    sdpa = qk + b * h * s * s_k * cb + b * s_k * h_kv * d_h * cb
    sdpa += s * s_k if masked else 0  # torch.where(causal_mask, position_bias, min)
    return {"sdpa": sdpa, "o_proj": b * s * h * d_h * cb}


@register("train.held", *T5)
def t5_held_at_the_loss(spec: ModelSpec, workload: Workload) -> int:
    """T5ForConditionalGeneration.forward at its loss: the decoder output [b, s, d] (the LM
    head gets a scaled copy, d ** -0.5), and the EncoderDecoderCache it builds in training too
    (use_cache): the self-attention keys and values (torch.cat copies) of every decoder block.
    Eager attention saves both (matmul with K^T, with V); sdpa's math kernel saves v but a
    scaled copy of k: the key cache [b, h, s, d_h] per block is live, not saved."""
    from estimator.kv_cache import decoder_len

    b, h, d_h, s = workload.batch_size, spec.n_heads, spec.head_dim, decoder_len(spec, workload)
    out = b * s * spec.d_model * _ib(workload)
    if workload.attention_impl != "fused":
        return out
    return out + dict(spec.stacks)["decoder"] * b * h * s * d_h * _ib(workload)


@register("backward.flash", *T5)
def t5_flash_backward(spec: ModelSpec, workload: Workload, cross: bool) -> bool:
    """The self-attention's bias requires grad: math sdpa (autograd ops); cross: flash."""
    return cross


@register("saved.cross_mask", *T5)
def t5_cross_mask(spec: ModelSpec, workload: Workload, s: int, s_src: int) -> int:
    """The zero position bias [1, h, s, s_src] every cross-attention passes as attn_mask."""
    return spec.n_heads * s * s_src * _ib(workload)
