"""BART (models/bart/modeling_bart.py, transformers 5.x): the rules where
BartForConditionalGeneration saves or allocates differently from our reference model, measured
in tests/tgauge/test_hf_rules_encoders.py.

Training: BartLearnedPositionalEmbedding.forward: the encoder builds arange(s).expand(b, s) +
offset ([b, s] int64 saved); the decoder passes arange(s) + cache_length ([1, s]).
Inference: ``BartPass``, the no-grad forward; ``eager_core`` is shared with T5 (t5.py).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.common import buffer_dtype
from estimator.rules.live import Live
from estimator.rules.reference.passes import FP32_BYTES, Pass
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec

BART = ("BartForConditionalGeneration",)


@register("saved.positions", *BART)
def bart_positions(spec: ModelSpec, sh: Shapes, stack: str, s: Any) -> Any:
    """BartLearnedPositionalEmbedding: encoder ids arange(s).expand(b, s) + 2 ([b, s] int64);
    the decoder's arange(s) + cache_length, unsqueezed, + 2 ([1, s])."""
    rows = sh.b if stack == "encoder" else 1
    return rows * s * INDEX_BYTES


@register("memory.buffers", *BART)
def bart_buffers(spec: ModelSpec, sh: Shapes) -> Any:
    """BartForConditionalGeneration's ``final_logits_bias`` buffer [1, V] (fp32 at init, cast
    with the weights by model.to(dtype))."""
    return nbytes(spec.vocab_size, buffer_dtype(sh))


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

    def stack(self, stack: str, s: Any, start: int, cross_s: Any = 0, cache=None) -> Any:
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        live.take(nd)  # inputs_embeds * embed_scale
        live.drop(nd)  # the lookup (the caller's take now stands for the scaled one)
        encoder = stack == "encoder"
        ids = live.take(s * INDEX_BYTES)  # arange (+ cache_length in the decoder)
        if encoder:
            live.take(self.b * s * INDEX_BYTES)  # expand(b, s) + offset
            live.drop(self.b * s * INDEX_BYTES, ids)
            ids = 0
        eager = self.sh.attention_impl == "eager"
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

    def logits(self, s: int) -> int:
        """BartForConditionalGeneration.forward: ``lm_logits = self.lm_head(outputs[0])``, then
        ``lm_logits + self.final_logits_bias``: a second [b, s, V] while the first is live;
        the name rebound, the first goes. -> the sum (kept)."""
        head = self.live.take(self.act(s, self.spec.vocab_size))
        total = self.live.take(head)
        self.live.drop(head)
        return total

    def post_norm(self, total: int) -> Any:
        """LayerNorm of the residual sum ``total`` (live): out + mean, rstd; the sum and the
        statistics dropped. -> its output."""
        stats = 2 * (total // (self.spec.d_model * self.cb)) * FP32_BYTES
        out = self.live.take(total, stats)
        self.live.drop(total, stats)
        return out - stats

    def attend(self, s: Any, s_k: Any, cached: bool, mask: bool) -> tuple[Any, Any]:
        """The core on q, k, v (live) -> (its output, the probabilities kept, eager).
        ``cached``: k and v are the cache's contiguous copies (matmul copies q only)."""
        live, spec, cb, b = self.live, self.spec, self.cb, self.b
        out = b * spec.n_heads * s * spec.head_dim * cb
        if self.sh.attention_impl != "eager":
            lse = b * spec.n_heads * s * FP32_BYTES
            live.take(out, lse)
            live.drop(lse)
            return out, 0
        scores = b * spec.n_heads * s * s_k * cb
        kv = b * spec.n_heads * s_k * spec.head_dim * cb
        return eager_core(live, out, kv, scores, cached, int(mask)), scores

    def attention_block(
        self, s: Any, s_k: Any, cached: bool, mask: bool, release: int = 0
    ) -> tuple[Any, Any]:
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

    def layer(self, stack: str, s: Any, start: int, cross_s: Any, cache) -> Any:
        live, nd = self.live, self.act(s, self.spec.d_model)
        decoder = stack == "decoder"
        h, probs = self.attention_block(s, s, decoder, decoder)
        if cross_s:
            h_c, cross_probs = self.attention_block(s, cross_s, True, False, probs)
            live.drop(h)
            h, probs = h_c, cross_probs
        inner = self.act(s, self.spec.d_ff)
        live.take(inner)  # fc1
        rule("replay.ffn.act", self.spec)(live, inner, self.spec.activation_fn)  # fc1's freed
        down = live.take(nd)  # fc2
        live.drop(inner)  # the activation output, rebound
        total = live.take(nd)  # residual + x
        live.drop(down)
        stats = 2 * self.b * s * FP32_BYTES
        y = live.take(nd, stats)  # final_layer_norm
        live.drop(total, stats, probs, h)
        return y - stats


def eager_core(live: Live, out: int, kv: int, scores: Any, cached: bool, adds: Any) -> Any:
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
