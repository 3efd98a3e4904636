"""Inference replays of Hugging Face classes whose forward keeps different tensors live than
our reference model's (rule kind "replay.pass", estimator/inference.py's Pass).

BERT (models/bert/modeling_bert.py, measured in tests/tgauge/test_hf_rules_encoders.py):
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

from estimator.dtypes import INDEX_BYTES
from estimator.implementations import register
from estimator.inference import FP32_BYTES, Live, Pass
from estimator.spec import ModelSpec, Workload

BERT = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")


@register("memory.buffers", *BERT)
def bert_buffers(spec: ModelSpec, workload: Workload) -> int:
    """BertEmbeddings' position_ids and token_type_ids buffers [1, max_position_embeddings]."""
    return 2 * spec.max_seq_len * INDEX_BYTES


@register("replay.pass", *BERT)
class BertPass(Pass):
    """BertModel's no-grad forward (the module docstring)."""

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        """BertEmbeddings then BertEncoder: the embedding output and the current layer's
        input stay live; -> the last layer's output (the embedding output dropped)."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        x0 = self.embeddings(s)
        x = x0
        for _ in range(dict(self.spec.stacks)[stack]):
            y = self.layer(stack, s, start, cross_s, cache)
            if x is not x0:
                live.drop(x)  # hidden_states rebound to the new output
            x = y
        live.drop(x0)
        return nd

    def embeddings(self, s: int) -> int:
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

    def output(self, nd: int, x_in: int) -> int:
        """BertSelfOutput / BertOutput: dense, + input, LayerNorm; -> its output."""
        live, stats = self.live, 2 * (nd // (self.spec.d_model * self.cb)) * FP32_BYTES
        dense = live.take(nd)
        total = live.take(nd)
        live.take(nd, stats)
        live.drop(dense, total, stats, x_in)
        return nd

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> int:
        """BertLayer: attention (+ SelfOutput), intermediate, output; -> the new [b, s, d]."""
        live, spec, cb = self.live, self.spec, self.cb
        nd, h, d_h = self.act(s, spec.d_model), spec.n_heads, spec.head_dim
        qkv = live.take(3 * nd)  # query, key, value
        probs = 0
        if self.w.attention_impl == "eager":
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
        up = live.take(inner)
        live.take(inner)  # gelu
        live.drop(up)
        y = self.output(nd, inner)  # the gelu output goes when BertOutput returns
        live.drop(probs, attn)
        return y


BART = ("BartForConditionalGeneration",)


@register("replay.pass", *BART)
class BartPass(Pass):
    """BartModel's no-grad forward (modeling_bart.py), which always builds its cache:
    BartEncoder  embed_tokens * embed_scale (the lookup dropped), positions ([b, s] ids + 2,
                 [b, s, d] rows), LayerNorm; inputs_embeds and the position rows stay live
                 through the encoder; each layer's input until it returns
    BartDecoder  the same with [1, s] positions, the additive causal mask [b, 1, s, s]
                 (eager; sdpa gets none) and the position ids [s] live through the decoder
    attention    q, k, v; the decoder's self and cross keys / values are copied into the
                 cache (torch.cat) and the projections dropped; eager: matmul's copies
                 (encoder: q, k^T, v; decoder: q only, the cache is contiguous), bmm, *
                 scaling, + mask, softmax (the probabilities returned to the layer), probs @ v,
                 transpose().contiguous(); sdpa: flash out + logsumexp
    sublayer     out_proj, residual + x (frees the attention's q, k, v, output), LayerNorm
    """

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        live.take(nd)  # inputs_embeds * embed_scale
        live.drop(nd)  # the lookup (the caller's take now stands for the scaled one)
        encoder = stack == "encoder"
        ids = live.take(s * INDEX_BYTES)  # arange (+ cache_length in the decoder)
        if encoder:
            live.take(self.b * s * INDEX_BYTES)  # expand(b, s) + offset
            live.drop(self.b * s * INDEX_BYTES, ids)
            ids = 0
        eager = self.w.attention_impl == "eager"
        mask = live.take(self.b * s * s * self.cb) if eager and not encoder else 0
        if not encoder:
            live.take(s * INDEX_BYTES)  # ids + offset
        rows = live.take(nd if encoder else s * spec.d_model * self.cb)  # position rows
        if not encoder:
            live.drop(s * INDEX_BYTES)
        x = self.post_norm(live.take(nd))  # inputs_embeds + positions, LayerNorm
        for _ in range(dict(spec.stacks)[stack]):
            y = self.layer(stack, s, start, cross_s, cache)
            live.drop(x)  # the layer's input, dropped as it returns
            x = y
        live.drop(rows, mask, ids)
        if not encoder:
            live.drop(nd)  # the decoder's inputs_embeds (the caller keeps no reference)
        return x

    def post_norm(self, total: int) -> int:
        """LayerNorm of the residual sum ``total`` (live): out + mean, rstd; the sum and the
        statistics dropped. -> its output."""
        stats = 2 * (total // (self.spec.d_model * self.cb)) * FP32_BYTES
        out = self.live.take(total, stats)
        self.live.drop(total, stats)
        return out - stats

    def attend(self, s: int, s_k: int, cached: bool, mask: bool) -> tuple[int, int]:
        """The core on q, k, v (live) -> (its output, the probabilities kept, eager).
        ``cached``: k and v are the cache's contiguous copies (matmul copies q only)."""
        live, spec, cb, b = self.live, self.spec, self.cb, self.b
        out = b * spec.n_heads * s * spec.head_dim * cb
        if self.w.attention_impl != "eager":
            lse = b * spec.n_heads * s * FP32_BYTES
            live.take(out, lse)
            live.drop(lse)
            return out, 0
        scores = b * spec.n_heads * s * s_k * cb
        kv = b * spec.n_heads * s_k * spec.head_dim * cb
        return eager_core(live, out, kv, scores, cached, int(mask)), scores

    def attention_block(
        self, s: int, s_k: int, cached: bool, mask: bool, release: int = 0
    ) -> tuple[int, int]:
        """Projections, cache, core, out_proj, residual sum, LayerNorm -> (out, probs);
        ``release``: bytes the layer drops as the attention returns (the earlier probs)."""
        live, spec = self.live, self.spec
        nd, nd_k = self.act(s, spec.d_model), self.act(s_k, spec.d_model)
        q = live.take(nd)
        kv = live.take(2 * nd_k)  # k_proj, v_proj
        if cached:
            live.take(2 * nd_k)  # DynamicLayer.update: torch.cat copies, kept by the cache
            live.drop(kv)
            kv = 0
        ctx, probs = self.attend(s, s_k, cached, mask)
        out = live.take(nd)  # out_proj
        live.drop(q, kv, ctx, release)  # the attention's locals, as it returns
        total = live.take(nd)  # residual + x
        live.drop(out)
        return self.post_norm(total), probs

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> int:
        live, nd = self.live, self.act(s, self.spec.d_model)
        decoder = stack == "decoder"
        h, probs = self.attention_block(s, s, decoder, decoder)
        if cross_s:
            h_c, cross_probs = self.attention_block(s, cross_s, True, False, probs)
            live.drop(h)
            h, probs = h_c, cross_probs
        inner = self.act(s, self.spec.d_ff)
        up = live.take(inner)  # fc1
        live.take(inner)  # activation
        live.drop(up)
        down = live.take(nd)  # fc2
        live.drop(inner)  # the activation output, rebound
        total = live.take(nd)  # residual + x
        live.drop(down)
        stats = 2 * self.b * s * FP32_BYTES
        y = live.take(nd, stats)  # final_layer_norm
        live.drop(total, stats, probs, h)
        return y - stats


def eager_core(live: Live, out: int, kv: int, scores: int, cached: bool, adds: int) -> int:
    """Eager attention's core on live q, k, v (BART, T5): matmul's contiguous copies of q
    (and k^T unless ``cached``: the cache's copies are contiguous), the scores, * scaling,
    ``adds`` elementwise additions (mask, bias), softmax (its output returned to the layer),
    probs @ v, the transpose's contiguous copy -> the context's bytes (``out``)."""
    clones = live.take(out + (0 if cached else kv))  # matmul's contiguous q (and k^T)
    live.take(scores)  # bmm
    live.drop(clones)  # matmul's temporaries
    live.take(scores)  # * scaling
    live.drop(scores)
    for _ in range(adds):
        live.take(scores)
        live.drop(scores)
    live.take(scores)  # softmax: returned to the layer
    live.drop(scores)
    v_copy = live.take(0 if cached else kv)  # matmul's contiguous v
    o = live.take(out)  # probs @ v
    live.drop(v_copy)
    ctx = live.take(out)  # transpose(1, 2).contiguous()
    live.drop(o)
    return ctx
