"""T5 (models/t5/modeling_t5.py, transformers 5.x): the rules where
T5ForConditionalGeneration saves or allocates differently from our reference model, and its
no-grad forward (``T5Pass``), measured in tests/tgauge/test_hf_rules_encoders.py.

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

from typing import Any

from estimator.rules.hf.bart import eager_core
from estimator.rules.reference.passes import FP32_BYTES, Pass
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

T5 = ("T5ForConditionalGeneration",)


@register("saved.relative_bias", *T5)
def t5_relative_bias(spec: ModelSpec, sh: Shapes, stack: str, s: Any) -> tuple[Any, Any]:
    """T5Attention.compute_bias runs in block 0 only: its bucket ids [s, s] int64 once."""
    return 0, s * s * INDEX_BYTES


@register("saved.sdpa", *T5)
def t5_sdpa(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any, masked: bool,
            fused_mask: bool, window: int | None, cross: bool) -> dict[str, Any]:  # fmt: skip
    """Self-attention: the relative bias is an attn_mask that requires grad: math sdpa saves
    q * sqrt(scale), k * sqrt(scale) [b,h,s,d_h] (copies), softmax [b,h,s,s_k], v (a view
    of v's output), and the causal where's bool [s, s_k]; ``o`` gets a copy of its output.
    Cross-attention: the flash kernel's saves (the shared zero mask: saved.cross_mask)."""
    cb, h, h_kv, d_h = sh.ib, spec.n_heads, spec.n_kv_heads, spec.head_dim
    if cross:
        lse = b * h * s * 4  # logsumexp [b, h, s] fp32
        return {"sdpa": (2 * b * s * h * d_h + 2 * b * s_k * h_kv * d_h) * cb + lse, "o_proj": 0}
    # the math sdpa kernel (aten _scaled_dot_product_attention_math) computes a half / bf16
    # query, key and value in fp32: in a low model dtype the scaled q, k, the softmax and v's
    # fp32 copy are saved in fp32 (measured on CPU, pure bf16 and fp16)
    acc = FP32_BYTES if cb < FP32_BYTES else cb
    qk = b * h * (s + s_k) * d_h * acc
    sdpa = qk + b * h * s * s_k * acc + b * s_k * h_kv * d_h * acc
    sdpa += s * s_k if masked else 0  # torch.where(causal_mask, position_bias, min)
    return {"sdpa": sdpa, "o_proj": b * s * h * d_h * cb}


@register("train.held", *T5)
def t5_held_at_the_loss(spec: ModelSpec, sh: Shapes) -> Any:
    """T5ForConditionalGeneration.forward at its loss: the decoder output [b, s, d] (the LM
    head gets a scaled copy, d ** -0.5), and the EncoderDecoderCache it builds in training too
    (use_cache): the self-attention keys and values (torch.cat copies) of every decoder block.
    Eager attention saves both (matmul with K^T, with V); sdpa's math kernel saves a scaled
    copy of k, and v itself in fp32 (in a low model dtype it saves v's fp32 copy, ``t5_sdpa``):
    the key cache [b, h, s, d_h] per block is live, not saved, and the value cache too in a
    low dtype."""
    b, h, d_h, s = sh.b, spec.n_heads, spec.head_dim, sh.s_dec
    out = b * s * spec.d_model * sh.ib
    if sh.attention_impl != "fused":
        return out
    unsaved = 1 if sh.ib >= FP32_BYTES else 2  # k; and v when math sdpa saved its fp32 copy
    return out + unsaved * dict(spec.stacks)["decoder"] * b * h * s * d_h * sh.ib


@register("backward.flash", *T5)
def t5_flash_backward(spec: ModelSpec, sh: Shapes, cross: bool) -> bool:
    """The self-attention's bias requires grad: math sdpa (autograd ops); cross: flash."""
    return cross


@register("saved.cross_mask", *T5)
def t5_cross_mask(spec: ModelSpec, sh: Shapes, s: Any, s_src: Any) -> Any:
    """The zero position bias [1, h, s, s_src] every cross-attention passes as attn_mask."""
    return spec.n_heads * s * s_src * sh.ib


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

    def norm(self, s: Any) -> Any:
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

    def logits(self, s: int) -> int:
        """T5ForConditionalGeneration.forward: ``sequence_output * (self.model_dim**-0.5)``
        when config.scale_decoder_outputs (configuration_t5: tie_word_embeddings is not
        False) is the LM head's input, a copy live beside the decoder output until the
        forward returns; -> the logits."""
        scaled = self.live.take(self.act(s, self.spec.d_model)) if self.spec.tie_embeddings else 0
        logits = super().logits(s)
        self.live.drop(scaled)
        return logits

    def stack(self, stack: str, s: Any, start: int, cross_s: Any = 0, cache=None) -> Any:
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        nd, decoder, eager = (
            self.act(s, spec.d_model),
            stack == "decoder",
            self.sh.attention_impl == "eager",
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

    def compute_bias(self, s: Any, s_k: Any, bidirectional: bool) -> Any:
        live, pairs = self.live, s * s_k
        temps = (6 if bidirectional else 5) * pairs * INDEX_BYTES + pairs  # buckets, bool
        live.take(temps)
        live.drop(temps)
        buckets = live.take(pairs * INDEX_BYTES)
        values = live.take(self.spec.n_heads * pairs * self.cb)  # embedding [s, s_k, h]
        live.drop(buckets)
        return values

    def core(
        self, s: Any, s_k: Any, cached: bool, masked: bool, bias: Any, cross: bool
    ) -> tuple[Any, Any]:
        """Attention on q, k, v (live) and the bias -> (its output, the probabilities kept)."""
        live, spec, cb, b = self.live, self.spec, self.cb, self.b
        out = b * spec.n_heads * s * spec.head_dim * cb
        scores = b * spec.n_heads * s * s_k * cb
        if self.sh.attention_impl != "eager":  # flash on the bias as attn_mask
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
        self, s: Any, s_k: Any, masked: bool, cross: bool, first: bool, release: int
    ) -> tuple[Any, Any]:
        """Norm, q, k, v (the decoder's into the cache), block 0's bias, attention, o,
        residual sum -> (the sum, the probabilities kept); ``release``: dropped on return."""
        live, spec = self.live, self.spec
        nd, inner = self.act(s, spec.d_model), spec.n_heads * spec.head_dim  # d_kv per head
        a, a_k = self.act(s, inner), self.act(s_k, inner)  # q; k or v: [b, s(_k), h * d_kv]
        cached = masked or cross  # the decoder's attentions
        normed = self.norm(s)
        q = live.take(a)
        kv = live.take(2 * a_k)
        if cached:
            live.take(2 * a_k)  # torch.cat copies kept by the cache
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

    def block(self, s: Any, cross_s: Any, decoder: bool, first: bool) -> Any:
        """T5Block: self-attention, cross-attention (decoder), FFN -> its output."""
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        h, probs = self.sublayer(s, s, decoder, False, first, 0)
        if cross_s:
            h, probs = self.sublayer(s, cross_s, False, True, first, probs + h)
        normed = self.norm(s)
        inner = self.act(s, spec.d_ff)
        live.take(inner)  # wi (T5DenseActDense) / wi_0 (T5DenseGatedActDense)
        rule("replay.ffn.act", spec)(live, inner, spec.activation_fn)  # act, its input freed
        if spec.gated:  # hidden_gelu * wi_1(x)
            live.take(inner, inner)
            live.drop(2 * inner)
        down = live.take(nd)  # wo
        live.drop(inner, normed)
        y = live.take(nd)  # residual + dropout(wo)
        live.drop(down, h, probs)
        return y
