"""T5's inference replay (rule kind "replay.pass", estimator/inference.py's Pass; BERT's and
BART's are in estimator/hf_passes.py). Measured in tests/tgauge/test_hf_rules_encoders.py."""

from __future__ import annotations

from estimator.dtypes import INDEX_BYTES
from estimator.hf_passes import eager_core
from estimator.implementations import register
from estimator.inference import FP32_BYTES, Pass

T5 = ("T5ForConditionalGeneration",)


@register("replay.pass", *T5)
class T5Pass(Pass):
    """T5's no-grad forward (modeling_t5.py; the cache is always built):
    T5LayerNorm  pow, mean, + eps, rsqrt, x * rsqrt, * weight
    block 0      compute_bias: the bucket temporaries ([s, s] int64), then the bias [1, h, s, s]
                 reused by every block (the decoder's cross-attentions share one zero bias
                 [1, h, s, s_src]); the decoder's eager causal mask [b, 1, s, s] (sdpa: built
                 per block from the bias by torch.where, then made contiguous)
    attention    as BART's, the bias added after * scaling (eager), or the flash kernel on the
                 bias as attn_mask (no grad in inference); each sublayer's norm output and its
                 o output live until it returns; the block's sublayer outputs and its last
                 probabilities until the block returns, its input until the stack rebinds it
    """

    def norm(self, s: int) -> int:
        live, nd, n4 = self.live, self.act(s, self.spec.d_model), self.b * s * FP32_BYTES
        live.take(nd, n4)  # pow, mean
        live.drop(nd)
        live.take(n4, n4)  # + eps, rsqrt
        live.drop(n4)
        live.take(nd)  # x * rsqrt
        live.drop(n4)
        live.take(nd)  # * weight
        live.drop(nd, n4)
        return nd

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        nd, decoder, eager = (
            self.act(s, spec.d_model),
            stack == "decoder",
            self.w.attention_impl == "eager",
        )
        mask = live.take(b * s * s * cb) if decoder and eager else 0  # [b, 1, s, s] additive
        self.held = [mask, 0, 0]  # mask, bias, cross bias
        x = nd  # inputs_embeds (the caller's)
        for i in range(dict(spec.stacks)[stack]):
            y = self.block(s, cross_s, decoder, first=i == 0)
            if i:
                live.drop(x)
            x = y
        y = self.norm(s)  # final_layer_norm
        live.drop(x if dict(spec.stacks)[stack] else 0, *self.held)
        if decoder:
            live.drop(nd)  # inputs_embeds
        return y

    def compute_bias(self, s: int, s_k: int, bidirectional: bool) -> int:
        live, pairs = self.live, s * s_k
        temps = (6 if bidirectional else 5) * pairs * INDEX_BYTES + pairs  # buckets, bool
        live.take(temps)
        live.drop(temps)
        buckets = live.take(pairs * INDEX_BYTES)
        values = live.take(self.spec.n_heads * pairs * self.cb)  # embedding [s, s_k, h]
        live.drop(buckets)
        return values

    def core(
        self, s: int, s_k: int, cached: bool, masked: bool, bias: int, cross: bool
    ) -> tuple[int, int]:
        """Attention on q, k, v (live) and the bias -> (its output, the probabilities kept)."""
        live, spec, cb, b = self.live, self.spec, self.cb, self.b
        out = b * spec.n_heads * s * spec.head_dim * cb
        scores = b * spec.n_heads * s * s_k * cb
        if self.w.attention_impl != "eager":  # flash on the bias as attn_mask
            extra = 0
            if masked:  # torch.where(causal, bias, min), then .contiguous()
                live.take(s * s_k, bias)
                extra = live.take(bias)
                live.drop(s * s_k, bias)
            elif not cross:  # the permuted bias made contiguous
                extra = live.take(bias)
            lse = b * spec.n_heads * s * FP32_BYTES
            live.take(out, lse)
            live.drop(lse, extra)
            return out, 0
        kv = b * spec.n_heads * s_k * spec.head_dim * cb
        # + position_bias (+ the causal mask)
        return eager_core(live, out, kv, scores, cached, 1 + int(masked)), scores

    def sublayer(
        self, s: int, s_k: int, masked: bool, cross: bool, first: bool, release: int
    ) -> tuple[int, int]:
        """Norm, q, k, v (the decoder's into the cache), block 0's bias, attention, o,
        residual sum -> (the sum, the probabilities kept); ``release``: dropped on return."""
        live, spec = self.live, self.spec
        nd, nd_k = self.act(s, spec.d_model), self.act(s_k, spec.d_model)
        cached = masked or cross  # the decoder's attentions
        normed = self.norm(s)
        q = live.take(nd)
        kv = live.take(2 * nd_k)
        if cached:
            live.take(2 * nd_k)  # torch.cat copies kept by the cache
            live.drop(kv)
            kv = 0
        if first and cross:  # the zero bias [1, h, s, s_src] every cross-attention adds
            self.held[2] = live.take(spec.n_heads * s * s_k * self.cb)
        elif first:
            self.held[1] = self.compute_bias(s, s_k, bidirectional=not masked)
        bias = self.held[2] if cross else self.held[1]
        ctx, probs = self.core(s, s_k, cached, masked, bias, cross)
        o = live.take(nd)  # o
        live.drop(q, kv, ctx)
        total = live.take(nd)  # residual + dropout(o)
        live.drop(o, normed, release)
        return total, probs

    def block(self, s: int, cross_s: int, decoder: bool, first: bool) -> int:
        """T5Block: self-attention, cross-attention (decoder), FFN -> its output."""
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        h, probs = self.sublayer(s, s, decoder, False, first, 0)
        if cross_s:
            h, probs = self.sublayer(s, cross_s, False, True, first, probs + h)
        normed = self.norm(s)
        inner = self.act(s, spec.d_ff)
        up = live.take(inner)  # wi
        live.take(inner)  # relu
        live.drop(up)
        down = live.take(nd)  # wo
        live.drop(inner, normed)
        y = live.take(nd)  # residual + dropout(wo)
        live.drop(down, h, probs)
        return y
