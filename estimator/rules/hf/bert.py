"""BERT (models/bert/modeling_bert.py, transformers 5.x): the rules where BertModel,
BertForMaskedLM and BertForSequenceClassification save or allocate differently from our
reference model, measured in tests/tgauge/test_hf_rules_encoders.py.

Training: BertEmbeddings.forward slices its position ids from the ``position_ids`` buffer
(nothing saved); token type ids are gathered from the all-zero buffer, [1, s] int64, expanded
to [b, s] (one [s] storage saved) and not an input of the step.
Inference (``BertPass``, rule kind "replay.pass"):
  BertEmbeddings   word + token type (ids gathered from a buffer, [1, s] int64), + positions
                   ([1, s, d] rows of the buffer's ids), LayerNorm: the embedding output stays
                   live through the whole encoder (BertEncoder's argument)
  BertSelfAttention  q, k, v; eager: matmul's contiguous copies of q and k^T, the scores,
                   * scaling, softmax; the probabilities are returned with the output and stay
                   live until BertLayer returns; v's copy, probs @ v, transpose().contiguous();
                   sdpa (CPU flash): its output [b, s, h, d_h] (reshaped as a view) and the
                   logsumexp [b, h, s] fp32, dropped at once
  BertSelfOutput / BertOutput  dense, + input, LayerNorm (out + mean, rstd): dense and sum
                   are live until the LayerNorm returns (post-norm, no in-place)
  BertIntermediate dense, gelu (the dense output dropped): live until BertOutput returns
Also the model's buffers: position_ids and token_type_ids [1, max_position_embeddings] int64.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.common import positions_from_buffer
from estimator.rules.reference.passes import FP32_BYTES, Pass
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

BERT = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")

register("saved.positions", *BERT)(positions_from_buffer)


@register("saved.token_type", *BERT)
def bert_token_type(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """gather(token_type_ids buffer, position_ids) is a new [1, s] int64, expanded to [b, s]."""
    return s * INDEX_BYTES


@register("inputs.token_type", *BERT)
def bert_token_type_input(spec: ModelSpec, sh: Shapes) -> Any:
    """The step passes no token_type_ids (the embeddings build them from a buffer)."""
    return 0


@register("memory.buffers", *BERT)
def bert_buffers(spec: ModelSpec, sh: Shapes) -> Any:
    """BertEmbeddings' position_ids and token_type_ids buffers [1, max_position_embeddings]."""
    return 2 * spec.max_seq_len * INDEX_BYTES


@register("replay.pass", *BERT)
class BertPass(Pass):
    """BertModel's no-grad forward (the module docstring)."""

    def stack(self, stack: str, s: Any, start: int, cross_s: Any = 0, cache=None) -> Any:
        """BertEmbeddings then BertEncoder: the embedding output and the current layer's
        input stay live; -> the last layer's output (the embedding output dropped)."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        x0 = self.embeddings(s)
        x = x0
        for i in range(dict(self.spec.stacks)[stack]):
            y = self.layer(stack, s, start, cross_s, cache)
            if i:  # hidden_states rebound to the new output (the embedding output stays)
                live.drop(x)
            x = y
        live.drop(x0)
        return nd

    def embeddings(self, s: Any) -> Any:
        """Word embeddings (taken by the caller), + token types, + positions, LayerNorm."""
        live, nd, cb, d = self.live, self.act(s, self.spec.d_model), self.cb, self.spec.d_model
        ids = live.take(s * INDEX_BYTES)  # gather(token_type_ids buffer, position_ids)
        types = live.take(nd)  # token_type_embeddings
        first = live.take(nd)  # inputs_embeds + token_type_embeddings
        rows = live.take(s * d * cb)  # position_embeddings [1, s, d]
        live.take(nd)  # + position_embeddings
        live.drop(first)
        live.take(nd, 2 * self.b * s * FP32_BYTES)  # LayerNorm (+ mean, rstd)
        live.drop(2 * self.b * s * FP32_BYTES, ids, types, rows, nd, nd)  # + the word embeds
        return nd

    def output(self, nd: int, x_in: int) -> Any:
        """BertSelfOutput / BertOutput: dense, + input, LayerNorm; -> its output."""
        live, stats = self.live, 2 * (nd // (self.spec.d_model * self.cb)) * FP32_BYTES
        dense = live.take(nd)
        total = live.take(nd)
        live.take(nd, stats)
        live.drop(dense, total, stats, x_in)
        return nd

    def layer(self, stack: str, s: Any, start: int, cross_s: Any, cache) -> Any:
        """BertLayer: attention (+ SelfOutput), intermediate, output; -> the new [b, s, d]."""
        live, spec, cb = self.live, self.spec, self.cb
        nd, h, d_h = self.act(s, spec.d_model), spec.n_heads, spec.head_dim
        qkv = live.take(3 * nd)  # query, key, value
        probs = 0
        if self.sh.attention_impl == "eager":
            scores = self.b * h * s * s * cb
            copies = live.take(2 * self.b * h * s * d_h * cb)  # matmul: q, k^T contiguous
            live.take(scores)  # bmm
            live.drop(copies)
            live.take(scores)  # * scaling
            live.drop(scores)
            probs = live.take(scores)  # softmax: returned, live until the layer returns
            live.drop(scores)
            v_copy = live.take(nd)  # matmul: v contiguous
            o = live.take(nd)  # probs @ v
            live.drop(v_copy)
            ctx = live.take(nd)  # transpose(1, 2).contiguous()
            live.drop(o)
        else:
            ctx = live.take(nd, self.b * h * s * FP32_BYTES)  # flash: out, logsumexp
            live.drop(self.b * h * s * FP32_BYTES)
            ctx = nd
        live.drop(qkv)
        attn = self.output(nd, ctx)  # attention_output, live until the layer returns
        inner = self.act(s, spec.d_ff)
        live.take(inner)  # intermediate.dense
        rule("replay.ffn.act", spec)(live, inner, spec.activation_fn)  # its input freed
        y = self.output(nd, inner)  # the gelu output goes when BertOutput returns
        live.drop(probs, attn)
        return y
