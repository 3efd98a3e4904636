"""The training forward's highest moment inside the last layer's attention (eager; fused chunked).

At the loss every saved tensor and the logits are live (estimator/replay/peak.py). When the
[b, h, s, s_k] scores dominate, an earlier moment can be higher: the end of the last layer's
AttentionScores.forward (reference_model/attention.py), where the masked (or scaled) scores
are still held by the local ``scores`` beside the saved probabilities (and dropout's mask and
output), before the rest of the layer and the head have saved anything. Live then, beyond the
tensors saved so far (every activation term less those saved after this moment):
  scores      the local: b h s s_k in the compute dtype
  ok          the pattern's bool mask [s, s_k] (Attention.self_attention's local; ~ok is saved)
  embeddings  Transformer.forward's ``x`` = embed(input_ids) [b, s, d] when embed_extras made
              a new tensor of it (positions added, token types, embedding norm or dropout)
  q, k, v     the projections' outputs, held by locals, when the saved Q and K are copies:
              matmul copies a [b, h, s, d_h] view of [b, s, h, d_h] unless b = 1; GQA's
              repeat_kv copies k and v (the h_kv-head k and v stay held)
Modelled for eager dense self-attention (causal, sliding window, full) of decoder-only and
encoder-only models, without rotary or relative positions; otherwise 0 (not modelled).

Fused chunked attention (Attention.chunked, 5-D blocks: torch's math sdpa) peaks instead at
the math sdpa's ``scores + mask`` in the last layer, the bmm's block scores still held
(``chunked_fused_moment``). Live then, beyond the tensors saved so far (the last layer's
sdpa has saved the contiguous q and k^T block copies of its first bmm, not yet its softmax
output nor the v block copy):
  scores      the bmm's [b, n_c, h, c, c] and scores + mask: 2 b n_c h c c, compute dtype
  mask        additive(ok): where(ok, 0, min) [1, n_c, 1, c, c] (causal; else [1, n_c, 1, 1, c])
  q_scaled    q * sqrt(scale) [b, n_c, h, c, d_h] (k's scaled copy is freed by then)
  blocks      F.pad's copies of q, k, v [b, n, n_c c, d_h]
  masks       arange(c) int64, real [n_c c] bool, ok [n_c, c, c] bool (causal)
  positions   Attention.self_attention's q_pos, k_pos aranges [s] int64
  q, k, v     the projections' outputs, held by locals (nothing saves them)
  embeddings  as above
Modelled without dropout, GQA, rotary or relative positions, for the blocks that matmul
copies (h > 1, and n_c > 1 or no padding); otherwise 0 (not modelled).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec
from estimator.sym import ceil_div

Terms = dict[str, Any]

#: saved after the scores in the last layer (names relative to ``{stack}.layers``; post-norm:
#: attn_norm too, Norm(x + F(x)) runs after the attention; issue 22p: sandwich out norms)
_AFTER_SCORES = ("self_attn.o_proj", "ffn_norm", "ffn.gate", "ffn.up", "ffn.act", "ffn",
                 "ffn.down", "dropout",
                 "attn_out_norm", "ffn_out_norm")  # fmt: skip
_HEAD = ("final_norm", "pooler.proj", "pooler.act", "head_transform.dense", "head_transform.act",
         "head_transform.norm", "lm_head", "loss")  # fmt: skip


def attention_moment(spec: ModelSpec, sh: Shapes, acts: Terms) -> Any:
    """Bytes beyond the states live at the last layer's attention scores (0: not modelled).
    ``acts``: activation terms by name (without the ``activations.`` prefix)."""
    stack, pattern, n_layers = sh.last.name, sh.last.pattern, sh.last.n_layers
    if pattern == "chunked" and sh.attention_impl == "fused":
        return chunked_fused_moment(spec, sh, acts)
    if (
        sh.attention_impl != "eager"
        or spec.arch == "encoder-decoder"
        or pattern == "chunked"
        or spec.position in ("rotary", "relative")
        or sh.checkpointing != "none"
    ):
        return 0
    b, s, d, cb = sh.b, sh.s, spec.d_model, sh.ib
    h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
    later = _AFTER_SCORES + (("attn_norm",) if spec.norm_position == "post" else ())
    after = sum(acts.get(f"{stack}.layers.{k}", 0) // n_layers for k in later)
    after += sum(acts.get(k, 0) for k in (f"{stack}.final_norm", *_HEAD[1:]))
    live = sum(acts.values()) - after
    live += b * h * s * s * cb  # the local scores
    live += s * s if pattern != "full" else 0  # ok [s, s] bool
    new_x = spec.position in ("learned", "sinusoidal") or spec.n_token_types or spec.embed_norm
    if new_x or sh.dropout > 0:
        live += b * s * d * sh.cb  # embed(input_ids), held by Transformer.forward
    if b > 1 and h > 1:
        live += b * s * h * d_h * cb  # q_proj's output (the saved Q is its copy)
    if (b > 1 and h > 1) or h_kv < h:
        live += b * s * h_kv * d_h * cb  # k_proj's output (the saved K: copy or repeat)
    if h_kv < h:
        live += b * s * h_kv * d_h * cb  # v_proj's output (the saved V: repeat_kv's copy)
    if sh.autocast:  # the cast cache's bias copies so far (all but the last o, FFN)
        last = d * spec.o_bias + (spec.d_ff * (2 if spec.gated else 1) + d) * spec.ffn_bias
        last *= cb
        live += rule("live.autocast_bias_casts", spec)(spec, sh) - last
        live += b * s * d * sh.cb  # attn_norm's fp32 output (q_proj saved its cast)
        live += 2 * s * INDEX_BYTES  # q_pos, k_pos aranges [s]
    return live


def chunked_fused_moment(spec: ModelSpec, sh: Shapes, acts: Terms) -> Any:
    """Bytes beyond the states live at the last layer's math sdpa ``scores + mask`` in fused
    chunked attention (0: not modelled)."""
    stack, c, n_layers = sh.last.name, sh.last.window, sh.last.n_layers
    b, s, d, cb = sh.b, sh.s, spec.d_model, sh.cb
    h, d_h = spec.n_heads, spec.head_dim
    n_c = ceil_div(s, c)
    if (
        spec.arch == "encoder-decoder"
        or spec.position in ("rotary", "relative")
        or sh.checkpointing != "none"
        or sh.dropout > 0
        or spec.n_kv_heads < h
        or h == 1
        or s < 2
        or (n_c == 1 and c > s)  # the blocks merge into a view: no matmul copies
    ):
        return 0
    blk = b * h * n_c * c * d_h * cb  # one [b, n_c, h, c, d_h] block tensor
    scores = b * n_c * h * c * c * cb
    causal = stack == "decoder"  # Pattern.for_stack: a chunked decoder is causal
    later = _AFTER_SCORES + (("attn_norm",) if spec.norm_position == "post" else ())
    after = sum(acts.get(f"{stack}.layers.{k}", 0) // n_layers for k in later)
    after += sum(acts.get(k, 0) for k in (f"{stack}.final_norm", *_HEAD[1:]))
    # the sdpa's saved softmax output and v block copy come after this moment
    after += acts.get(f"{stack}.layers.self_attn.sdpa", 0) // n_layers - 2 * blk
    live = sum(acts.values()) - after
    live += 2 * scores  # the bmm's scores, scores + mask
    live += (n_c * c * c if causal else n_c * c) * cb  # the additive mask
    live += blk  # q * sqrt(scale)
    live += 3 * blk  # F.pad of q, k, v
    live += c * INDEX_BYTES + n_c * c + (n_c * c * c if causal else 0)  # local, real, ok
    live += 2 * s * INDEX_BYTES  # q_pos, k_pos
    live += 3 * b * s * h * d_h * cb  # q_proj, k_proj, v_proj outputs
    new_x = spec.position in ("learned", "sinusoidal") or spec.n_token_types or spec.embed_norm
    if new_x:
        live += b * s * d * cb  # embed(input_ids), held by Transformer.forward
    return live
