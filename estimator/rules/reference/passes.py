"""The reference model's forward without grad, replayed op by op: the rule of kinds
``replay.pass`` (a prefill) and ``replay.step`` (a decode step), and ``replay.ffn.act``.

The drivers of estimator/replay/inference.py run a Pass over the embeddings, stacks and head;
an implementation whose forward keeps other tensors live registers its own Pass subclass
(estimator/rules/hf/). Convention of the live tracker (estimator/rules/live.py): the live bytes
are read after every aten op, with the op's output counted and the temporaries it consumed
still alive (Python drops them once the op returns). Each helper below allocates what one
reference-model op returns (``take``), reads the peak, and frees what the Python frame drops
(``drop``). Views allocate nothing. Modelled: embeddings, positions, norms (LayerNorm's
mean/rstd; RMSNorm's steps), projections, rotary tables and products, masks (aranges,
[s_q, s_k] bool), eager scores / mask / softmax / mix with matmul's contiguous copies, CPU
flash sdpa (output + logsumexp), chunk-wise attention (padded blocks, block masks, eager or
math-sdpa block scores, the output copies), FFN, the KV cache's torch.cat and rolling-buffer
clones. Not modelled: T5's bucket temporaries ([s_q, s_k] or [c, c] int64, freed before the
scores), the pooler (2 x [b, d]), a key padding mask in chunk-wise attention (inference passes
none).
"""

from __future__ import annotations

from estimator.rules.live import Live
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes, for_layer_kind
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec
from estimator.sym import ceil_div

FP32_BYTES = 4
BOOL_BYTES = 1


class Pass:
    """One forward of the reference model over ``s`` new tokens per sequence (the rule of
    kind "replay.pass": an implementation's class replays its own forward)."""

    def __init__(self, spec: ModelSpec, sh: Shapes, live: Live) -> None:
        self.spec, self.sh, self.live = spec, sh, live
        self.b, self.cb = sh.b, sh.cb

    def act(self, s: int, width: int) -> int:  # bytes of a [b, s, width] activation
        return self.b * s * width * self.cb

    def embed(self, s: int) -> int:
        """The token embeddings [b, s, d]; with embed_scale (Transformer.embed_tokens) times
        sqrt(d): the scaled copy replaces the embedding's output."""
        x = self.live.take(self.act(s, self.spec.d_model))
        if self.spec.embed_scale:
            self.live.take(x)
            self.live.drop(x)
        return x

    def logits(self, s: int) -> int:
        """The LM head's output [b, s, V] (kept): one tensor; soft-capped (issue 22p,
        Transformer.head and SoftCap): / c, tanh, * c, the head's output held by the caller's
        local until SoftCap returns."""
        live, x = self.live, self.act(s, self.spec.vocab_size)
        live.take(x)  # lm_head
        if self.spec.final_softcap is not None:
            live.take(x)  # / c
            live.take(x)  # tanh
            live.drop(x)
            live.take(x)  # * c
            live.drop(x, x)  # tanh's output; the head's output
        return x

    @property
    def cache_cast(self) -> bool:
        """Whether the cache keeps its own dtype (``kv_cache_dtype``, e.g. fp8): the new keys
        and values are cast into it, the cached ones are read in it (as vLLM's fp8 cache,
        vllm/attention/ops/paged_attn.py: the kernel reads the cache's dtype)."""
        return self.sh.kv_dtype != self.sh.compute_dtype

    def kv_bytes(self, positions: int) -> int:
        """Keys + values of ``positions`` cached positions [2, b, h_kv, T, d_h] in the KV
        cache's dtype (int4: two per byte)."""
        spec = self.spec
        return nbytes(2 * self.b * spec.n_kv_heads * spec.head_dim * positions, self.sh.kv_dtype)

    def norm(self, s: int) -> int:
        """LayerNorm: out + fp32 mean, rstd [n, 1] (dropped); RMSNorm: pow, mean, +eps,
        rsqrt, x * rms, * weight."""
        return self.rows_norm(self.b * s, self.spec.d_model)

    def qk_norm(self, s: int, x: int, n_heads: int) -> int:
        """QK-norm (issue 22p, Attention.project) on a projection's output (x bytes [b, s, n,
        d_h]) -> the norm's output; x goes once the norm returns (its name is rebound)."""
        if self.spec.qk_norm == "none":
            return x
        y = self.rows_norm(self.b * s * n_heads, self.spec.head_dim)
        self.live.drop(x)
        return y

    def rows_norm(self, n: int, width: int) -> int:
        """``norm`` over n rows of ``width`` values."""
        live, nd = self.live, n * width * self.cb
        if self.spec.norm == "rmsnorm":
            live.take(nd)  # x.pow(2)
            live.take(n * self.cb)  # mean [n, 1]
            live.drop(nd)
            live.take(n * self.cb)  # + eps
            live.drop(n * self.cb)
            live.take(n * self.cb)  # rsqrt
            live.drop(n * self.cb)
            live.take(nd)  # x * rms
            w = self.rms_weight()
            live.take(nd)  # * weight
            live.drop(nd, n * self.cb, w)
            return nd
        live.take(nd, 2 * n * FP32_BYTES)
        live.drop(2 * n * FP32_BYTES)
        return nd

    def rms_weight(self) -> int:
        """Bytes RMSNorm makes of its weight before ``* weight`` (freed with x * rms): none,
        the parameter itself (an implementation's Pass overrides it)."""
        return 0

    def rotary(self, s: int, x: int) -> int:
        """RotaryPositions on x bytes [b, n, s, d_h] -> a new x; its tables are dropped.
        Partial rotary (rotary_dim r, issue 22p): the rotation on x[..., :r] (``part`` bytes,
        tables over r), then torch.cat with x[..., r:]."""
        width = self.spec.qk_rope_head_dim or self.spec.head_dim  # issue 22l
        live, d_h = self.live, self.spec.rotary_dim or width
        full, x = x, x * d_h // width  # issue 22p: x is the rotated part
        half = d_h // 2 * FP32_BYTES
        live.take(half)  # arange
        live.take(half)  # neg
        live.drop(half)
        live.take(half)  # / d_h
        live.drop(half)
        live.take(half)  # theta ** : inv_freq
        live.drop(half)
        live.take(s * FP32_BYTES)  # positions.float()
        live.take(s * half)  # angles [s, d_h/2]
        live.drop(s * FP32_BYTES)
        live.take(2 * s * half)  # cat: [s, d_h]
        live.drop(s * half)
        live.take(s * d_h * self.cb)  # cos
        live.take(s * d_h * self.cb)  # sin
        live.take(x)  # x * cos
        live.take(x // 2)  # -x2
        live.take(x)  # cat([-x2, x1])
        live.drop(x // 2)
        live.take(x)  # * sin
        live.drop(x)
        live.take(x)  # sum: the rotated x
        live.drop(2 * x, half, 2 * s * half, 2 * s * d_h * self.cb)
        if full != x:  # torch.cat([rotated, x[..., r:]]); the rotated part goes with it
            live.take(full)
            live.drop(x)
        return full

    def attend(
        self, s_q: int, s_k: int, mask_bytes: int, bias: int, kv_contiguous: bool = False
    ) -> int:
        """Attention.attend of q [b, h, s_q, d_h] on s_k keys; -> out bytes [b, h, s_q, d_h].
        ``mask_bytes``: the [s_q, s_k] bool ``ok`` (0: none); ``bias``: an additive bias;
        ``kv_contiguous``: k, v are contiguous [b, h_kv, s_k, d_h] (KVCache.append_self's
        torch.cat of a past), not transposed views of the projections.

        Eager: torch.matmul (aten/src/ATen/native/LinearAlgebra.cpp, _matmul_impl) folds
        q, k^T and v into [b * h, .., ..] with reshape, which copies only what cannot be
        viewed so: Attention.heads' [b, n, t, d_h] (a transpose of [b, t, n, d_h], strides
        (t n d_h, d_h, n d_h, 1); rotary keeps that layout) merges b with n only if b, n or t
        is 1 (a size-1 dimension merges with any stride). repeat_kv's repeat_interleave
        (reference_model/attention.py; unsqueeze, expand, then reshape's contiguous clone)
        and the cache's torch.cat are contiguous: their k^T and v fold as views."""
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
        out = b * h * s_q * d_h * cb
        kv_rep = b * h * s_k * d_h * cb
        folds = b == 1 or h == 1  # [b, h, ..] -> [b * h, ..] is a view whatever the strides
        if self.sh.attention_impl != "eager":  # CPU flash: output + fp32 logsumexp [b, h, s_q]
            extra = 0
            if mask_bytes or bias:  # additive mask where(ok, 0, min) [s_q, s_k] (+ bias)
                extra = live.take(s_q * s_k * cb)
            live.take(out, b * h * s_q * FP32_BYTES)
            live.drop(b * h * s_q * FP32_BYTES, extra)
            return out
        n_rep = h // h_kv
        reps = live.take(kv_rep) + live.take(kv_rep) if n_rep > 1 else 0  # repeat_kv k, v
        scores = b * h * s_q * s_k * cb
        q_copy = live.take(out) if s_q > 1 and not folds else 0  # matmul: q [b*h, s_q, d_h]
        # k^T [b*h, d_h, s_k] and v [b*h, s_k, d_h]: copies of Attention.heads' views only
        kv_views = n_rep > 1 or kv_contiguous or folds or s_k == 1
        kv_copy = 0 if kv_views else kv_rep
        k_copy = live.take(kv_copy)  # k^T made contiguous
        live.take(scores)  # bmm
        live.drop(q_copy, k_copy)
        self.softmax_mix(scores, bias, mask_bytes, kv_copy, out, reps)  # v made contiguous
        return out

    def softmax_mix(
        self, scores: int, bias: int, mask: int, v_copy: int, out: int, reps: int
    ) -> None:
        """Eager AttentionScores after the Q K^T bmm (``scores`` bytes live), then AttentionMix:
        * scale, (soft-cap: / c, tanh, * c), + bias, masked_fill (``mask``: the bool ok, 0:
        none), softmax, matmul's copy of v (``v_copy``), probs @ v -> ``out``; the probs and
        ``reps`` (repeat_kv) are freed."""
        live = self.live
        live.take(scores)  # * scale
        live.drop(scores)
        if self.spec.attn_softcap is not None:  # issue 22p
            live.take(scores)  # / c
            live.take(scores)  # tanh
            live.drop(scores)  # / c's, once tanh returns
            live.take(scores)  # * c
            live.drop(scores, scores)  # tanh's; the scaled scores (the name rebound)
        if bias:
            live.take(scores)  # + bias
            live.drop(scores)
        if mask:
            live.take(mask)  # ~ok
            live.take(scores)  # masked_fill
            live.drop(scores, mask)
        live.take(scores)  # softmax
        live.drop(scores)
        live.take(v_copy)  # matmul: v made contiguous
        live.take(out)  # bmm: probs @ v
        live.drop(v_copy, scores, reps)

    def attention(self, s: int, start: int, stack: str, cross_s: int = 0, cache=None) -> int:
        """Attention.forward on the norm output [b, s, d] -> o_proj output [b, s, d].
        Self-attention (``cross_s`` 0) over start + s positions, or cross-attention on
        ``cross_s`` encoder positions. ``cache``: (held before, kept after) positions of the
        self-attention cache; the kept keys/values stay live after the pass."""
        if not cross_s and rule("attention.latent", self.spec)(self.spec):  # issue 22l
            return rule("replay.latent_attention", self.spec)(self, s, start, cache)
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
        q = self.qk_norm(s, live.take(self.act(s, h * d_h)), h)  # q_proj (, q_norm)
        if cross_s:  # keys/values of the encoder output (decode: cached by the prefill)
            if cache is None or cache[0] == 0:  # k_proj, v_proj of the memory
                kv = live.take(2 * b * cross_s * h_kv * d_h * cb)
            o = self.attend(s, cross_s, 0, 0)
            if cache is None:  # a prefill keeps them in the cache
                live.drop(kv)
        else:
            o = self.self_attention(s, start, stack, q, cache)
        out = live.take(self.act(s, h * d_h))  # transpose + reshape: a contiguous copy
        live.drop(o)
        y = live.take(self.act(s, spec.d_model))  # o_proj
        live.drop(out, q)
        return y

    def self_attention(self, s: int, start: int, stack: str, q: int, cache) -> int:
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        per_pos = b * spec.n_kv_heads * spec.head_dim * cb  # keys (or values) of a position
        k = self.qk_norm(s, live.take(s * per_pos), spec.n_kv_heads)  # k_proj (, k_norm)
        live.take(s * per_pos)  # v_proj
        q_pos = live.take(s * INDEX_BYTES)  # arange
        q_rot = 0
        if spec.position == "rotary":
            q_rot = self.rotary(s, q)
            k_rot = self.rotary(s, k)
            live.drop(k)  # the unrotated keys
            k = k_rot
        s_k, working = s, 2 * s * per_pos  # keys + values attended to, dropped after
        if cache is not None:
            held, keep = cache
            kv = self.kv_bytes  # keys + values of n positions in the cache's dtype
            s_k = held + s
            cast = live.take(kv(s)) if self.cache_cast else 0  # .to(kv dtype) of new k, v
            if held:  # torch.cat([past, new]) for keys, then values
                live.take(kv(s_k))
            if keep < s_k:  # the kept positions are cloned; the cat result is dropped
                live.take(kv(keep))
            live.drop(kv(held))  # the old cache
            if held:
                live.drop(cast or working)  # the new keys/values alone (or their cast)
            working = kv(s_k) if keep < s_k else 0  # else: they are the cache
            if keep < s_k and s == 1:  # one query attends to the kept positions only
                live.drop(working)
                s_k, working = keep, 0
            if keep < s_k and not held:  # the cast copy (if any) and the new k, v
                working = cast + 2 * s * per_pos
            if cast and held:  # the new keys/values in the compute dtype
                working += 2 * s * per_pos
            elif cast and keep >= s_k:  # the cast is the cache; attention reads k, v
                working = 2 * s * per_pos
        k_pos = live.take(s_k * INDEX_BYTES)  # arange
        pattern, window = self.sh.stack(stack).pattern, self.sh.stack(stack).window
        if pattern == "chunked" and s > 1 and s_k == s:  # Attention.chunked: start 0, no past
            o = self.chunked(s, window, stack)
            live.drop(q_pos, k_pos, q_rot, working)
            return o
        fused_causal = self.sh.attention_impl != "eager" and pattern == "causal"
        # sdpa's is_causal: no bias and no past keys -> no [s, s] mask is built
        is_causal = fused_causal and spec.position != "relative" and s_k == s
        mask, bias = self.masks(stack, s, s_k, start, build_mask=not is_causal)
        # a cached past: torch.cat's contiguous keys/values (or a rolling-buffer clone of them)
        o = self.attend(s, s_k, mask, bias, kv_contiguous=cache is not None and cache[0] > 0)
        live.drop(mask, bias, q_pos, k_pos, q_rot, working)
        return o

    def chunked(self, s: int, c: int, stack: str) -> int:
        """Attention.chunked on q [b, h, s, d_h] -> bytes of its output [b, h, n_c*c, d_h] (a
        slice of it, [.., :s, :], is returned: the whole copy stays live for the caller's).
        Blocks [b, n_c, n, c, d_h] are views of padded copies; matmul copies a block view into
        [b*n_c*n, c, d_h] unless it merges (below); repeat_kv's copies are contiguous. Fused: sdpa
        of 5-D blocks runs the math kernel (not CPU flash)."""
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
        n_c = ceil_div(s, c)
        n_rep = h // h_kv
        causal = stack == "decoder"  # Pattern.for_stack: a chunked decoder is causal
        local = live.take(c * INDEX_BYTES)  # arange(c)
        grid = live.take(n_c * c * INDEX_BYTES)  # arange(n_c*c)
        real = live.take(n_c * c * BOOL_BYTES)  # < s
        live.drop(grid)
        ok, mask_el = 0, n_c * c  # key_ok [1, n_c, 1, 1, c]: a view of real
        if causal:
            tri = live.take(c * c * BOOL_BYTES)  # local[:, None] >= local[None, :]
            ok = live.take(n_c * c * c * BOOL_BYTES)  # key_ok & tri: [1, n_c, 1, c, c]
            live.drop(tri)
            mask_el = n_c * c * c
        bias = 0
        if spec.position == "relative":  # pos(local, local): [1, h, c, c]
            bias = live.take(h * c * c * cb)
        blk = b * n_c * c * d_h * cb  # bytes of one head's blocks (padded)
        pq = live.take(h * blk)  # F.pad(q)
        pkv = live.take(h_kv * blk) + live.take(h_kv * blk)  # F.pad(k), F.pad(v)
        # the blocks of h heads merge into [b*n_c*h, c, d_h] (a view) if h is 1, or n_c is 1
        # and F.pad padded; with nothing to pad, F.pad clones the [b, s, h, d_h] layout
        merged = h == 1 or (n_c == 1 and n_c * c > s)
        kv_copy = 0 if n_rep > 1 or merged else h * blk  # matmul's copy of a k / v block view
        q_copy = 0 if merged else h * blk
        scores, out = b * n_c * h * c * c * cb, h * blk
        if self.sh.attention_impl == "eager":
            reps = 0
            if n_rep > 1:  # repeat_kv k, v; the padded k, v go with attend's rebound names
                reps = live.take(out) + live.take(out)
                live.drop(pkv)
                pkv = 0
            live.take(q_copy, kv_copy)  # matmul: q, k^T block views made contiguous
            live.take(scores)  # bmm
            live.drop(q_copy, kv_copy)
            self.softmax_mix(scores, bias, mask_el * BOOL_BYTES, kv_copy, out, reps)
        else:  # math sdpa
            live.take(cb, cb)  # additive: zeros(()), the scalar min
            mask = live.take(mask_el * cb)  # where(ok, 0, min)
            live.drop(cb, cb)
            if bias:  # mask + bias -> [1, n_c, h, c, c]
                live.drop(mask)
                mask = live.take(n_c * h * c * c * cb)
            q_scaled = live.take(out)  # q * sqrt(scale), q's layout
            reps = live.take(out) + live.take(out) if n_rep > 1 else 0  # enable_gqa: k, v
            k_scaled = live.take(out)  # k^T * sqrt(scale), k's layout
            live.take(q_copy, kv_copy)  # matmul: block views made contiguous
            live.take(scores)  # bmm
            live.drop(q_copy, kv_copy, k_scaled)
            live.take(scores)  # + mask
            live.drop(scores)  # the bmm's
            live.take(scores)  # _safe_softmax
            live.drop(scores)  # the sum
            live.take(kv_copy)  # matmul: v block view made contiguous
            live.take(out)  # bmm: probs @ v
            live.drop(kv_copy, scores, q_scaled, reps, mask)
        live.drop(pq, pkv)  # attend's arguments
        whole = live.take(out)  # transpose + reshape [b, h, n_c*c, d_h]: a copy
        live.drop(out, local, real, ok, bias)
        return whole

    def masks(
        self, stack: str, s_q: int, s_k: int, start: int, build_mask: bool = True
    ) -> tuple[int, int]:
        """Pattern.allowed -> ok [s_q, s_k] bool (causal, window, chunk; none for a full
        stack); RelativePositionBias -> bias [1, h, s_q, s_k]. Their int64 temporaries are
        dropped before the scores (not modelled)."""
        st = self.sh.stack(stack)
        pattern, causal = st.pattern, st.causal
        has_mask = build_mask and (causal or pattern in ("sliding_window", "chunked"))
        mask = self.live.take(s_q * s_k * BOOL_BYTES) if has_mask else 0
        bias = 0
        if self.spec.position == "relative":
            bias = self.live.take(self.spec.n_heads * s_q * s_k * self.cb)  # embedding
        return mask, bias

    def ffn(self, s: int) -> int:
        """FeedForward: up, act (gated: gate, act, up, product), down."""
        live, inner = self.live, self.act(s, self.spec.d_ff)
        if self.spec.gated:
            live.take(inner)  # gate
            rule("replay.ffn.act", self.spec)(live, inner, self.spec.activation_fn)
            live.take(inner)  # up
            live.take(inner)  # act * up
            live.drop(2 * inner)
        else:
            live.take(inner)  # up
            rule("replay.ffn.act", self.spec)(live, inner, self.spec.activation_fn)
        y = live.take(self.act(s, self.spec.d_model))  # down
        live.drop(inner)
        return y

    def sublayer(self, s: int, fn) -> int:
        """Pre-norm x + F(Norm(x)); post-norm Norm(x + F(x)) (eval: no dropout) -> new x."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        if self.spec.norm_position == "pre":
            h = self.norm(s)
            r = fn()
            live.drop(h)
            if self.spec.sublayer_norm == "sandwich":  # issue 22p: x + OutNorm(F(Norm(x)))
                o = self.norm(s)
                live.drop(r)  # F's output, the out norm's argument
                r = o
            live.take(nd)  # x + r
            live.drop(r)
            return nd
        r = fn()
        live.take(nd)  # x + r
        live.drop(r)
        self.norm(s)
        live.drop(nd)
        return nd

    def parallel_layer(self, stack: str, s: int, start: int, cache) -> None:
        """Layer.parallel_forward: its locals h = Norm1(x), a, h2 = Norm2(x) (one_norm: h),
        m live until it returns; (x + a) + m makes two [b, s, d], the first a temporary."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        h = self.norm(s)
        a = self.attention(s, start, stack, 0, cache)
        h2 = self.norm(s) if self.spec.parallel_block == "two_norms" else 0
        m = self.ffn(s)
        xa = live.take(nd)  # x + a
        live.take(nd)  # + m: the layer's output
        live.drop(xa, h, a, h2, m)

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        """Layer.forward: its input stays live (the stack's args); -> one new [b, s, d]."""
        if self.spec.parallel_block != "none":
            self.parallel_layer(stack, s, start, cache)
            return
        x_a = self.sublayer(s, lambda: self.attention(s, start, stack, 0, cache))
        if cross_s:
            x_c = self.sublayer(s, lambda: self.attention(s, start, stack, cross_s, cache))
            self.live.drop(x_a)
            x_a = x_c
        self.sublayer(s, lambda: self.ffn(s))
        self.live.drop(x_a)

    def kind_layers(self, stack: str, s: int, start: int, cross_s: int, cache, inputs) -> None:
        """The layers of a per-layer pattern (``spec.layer_pattern``, issue 22p), each replayed
        as its kind runs (estimator/shapes.py ``for_layer_kind``): a full layer's cache holds
        every earlier position and keeps them all (reference_model/masks.py layer_patterns)."""
        run = self.sh
        for i, kind in enumerate(self.spec.layer_pattern):
            if i:  # the previous layer's input goes with the stack's old args
                self.live.drop(inputs[i - 1])
            self.sh = for_layer_kind(run, kind)
            held = cache if cache is None or kind == "sliding" else (start, start + s)
            self.layer(stack, s, start, cross_s, held)
        self.sh = run

    def replayed_layers(self, stack: str) -> int:
        """Layers of ``stack`` replayed op by op (from layer 2 on, every layer alike)."""
        return 3

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        """Stack.forward on the embeddings [b, s, d] (kept live by the caller) -> its output."""
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        x0 = 0  # embed_extras: a new x when something is added to the embeddings
        if spec.position in ("learned", "sinusoidal"):
            positions = live.take(s * INDEX_BYTES)  # arange
            shifted = live.take(s * INDEX_BYTES) if spec.position == "learned" else 0
            table = live.take(s * spec.d_model * self.cb)  # [s, d] rows
            live.drop(shifted)
            x0 = live.take(nd)  # x + positions
            live.drop(table, positions)
        if spec.n_token_types and stack == spec.stacks[0][0]:
            ids = live.take(self.b * s * INDEX_BYTES)  # zeros: token_type_ids
            types = live.take(nd)
            live.take(nd)
            live.drop(types, ids, x0)
            x0 = nd
        if spec.embed_norm:
            self.norm(s)
            live.drop(x0)
            x0 = nd
        n_layers = dict(spec.stacks)[stack]
        inputs = [x0] + [nd] * n_layers  # bytes of each layer's input (0: the embeddings)
        kinds = spec.layer_pattern if stack == "decoder" else None  # issue 22p
        replayed = min(n_layers, self.replayed_layers(stack)) if kinds is None else 0
        for i in range(replayed):
            if i:  # the previous layer's input goes with the stack's old args
                live.drop(inputs[i - 1])
            top, delta = self.live.measure(lambda: self.layer(stack, s, start, cross_s, cache))
        if kinds is not None:
            self.kind_layers(stack, s, start, cross_s, cache, inputs)
        elif n_layers > replayed:  # the others repeat the last: same top, same net change
            live.repeat(n_layers - replayed, top - nd, delta - nd)  # each starts by dropping nd
        y = self.norm(s) if spec.final_norm else 0
        live.drop(inputs[n_layers - 1] if n_layers else 0)  # args: the last layer's input
        if y:
            live.drop(inputs[n_layers])  # the last layer's output
        return y or inputs[n_layers]


@register("replay.ffn.act", "reference")
def act_forward(live: Live, inner: int, activation_fn: str | None = None) -> None:
    """nn.GELU / nn.ReLU on up's output (``inner`` bytes, then dropped): one new tensor."""
    live.take(inner)  # act
    live.drop(inner)
