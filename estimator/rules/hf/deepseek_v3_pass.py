"""DeepSeek-V3's no-grad forward (a prefill, a decode step), replayed op by op as the live
tracker (profiler/live.py) reads DeepseekV3ForCausalLM (transformers 5.24
models/deepseek_v3/modeling_deepseek_v3.py): ``DeepseekV3Pass``, the rule of ``replay.pass`` /
``replay.step`` for that class (issue 22s). Measured in fp32 on CPU, eager and sdpa, prefill
and decode, plain calls and generate() (tests/tgauge/test_hf_rules_families.py).

Where it differs from the Llama replay (estimator/rules/hf/decoders_pass.py HFPass): the
base model's position_ids (arange + past, no cache_position) and the rotary's fp32
transients; DeepseekV3RMSNorm (``rms``); latent attention (``attention``: the q LoRA, the
compressed_kv held to the end, the interleaved rotary, the cache's two torch.cat of the
latent, the query cat, expand_kv over the T cached positions); the eager core and torch's
math sdpa fallback (d_v != d_qk), both copying the values (a [b, h] fold of kv_b_proj's
view); the fp32 group-limited router (``router``), the grouped_mm experts (moe.py
MoEPass.experts) and the shared MLP (``moe``); dense layers below first_k_dense_replace.
"""

from __future__ import annotations

from estimator.rules.hf.decoders_pass import ENGINES_PASSING_POSITION_IDS
from estimator.rules.hf.moe import MoEPass
from estimator.rules.live import Live
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
BOOL_BYTES = 1
CLASS = "DeepseekV3ForCausalLM"


class DeepseekV3Pass(MoEPass):
    """One no-grad forward of DeepseekV3ForCausalLM over ``s`` new tokens per sequence."""

    kind = "moe"  # the current layer's FFN: "dense" (DeepseekV3MLP) or "moe"

    def kv_bytes(self, positions: int) -> int:
        """The latent cache of ``positions`` positions: kv_nope [b, 1, T, r_kv] and k_rot
        [b, 1, T, d_rope] (DeepseekV3Attention.forward's ``cache.update``)."""
        spec = self.spec
        width = spec.kv_lora_rank + spec.qk_rope_head_dim
        return nbytes(self.b * width * positions, self.sh.kv_dtype)

    def rms(self, n: int, width: int) -> int:
        """DeepseekV3RMSNorm.forward on [n, width] (its input the caller's; ``.to(fp32)``
        is the input itself in fp32) -> the output bytes."""
        live, x, col = self.live, n * width * self.cb, n * FP32_BYTES
        live.take(x)  # pow(2)
        live.take(col)  # mean: variance [n, 1]
        live.drop(x)
        live.take(col, col)  # + eps, rsqrt
        live.drop(col)  # the sum goes once rsqrt returns
        live.take(x)  # hidden_states * rsqrt
        live.drop(col)  # rsqrt
        live.take(x)  # self.weight * hidden_states
        live.drop(x, col)  # the product, variance: the function returns
        return x

    def norm(self, s: int) -> int:
        return self.rms(self.b * s, self.spec.d_model)

    def rotate(self, x: int) -> int:
        """apply_rotary_pos_emb_interleave on q_rot or k_rot (x bytes): ``q1 * cos - q2 *
        sin`` and ``q2 * cos + q1 * sin`` (each product a new half, freed by the sum), cat."""
        live, half = self.live, x // 2
        for _ in range(2):
            live.take(half, half, half)  # the two products, their difference (sum)
            live.drop(half, half)
        live.take(x)  # cat
        live.drop(half, half)
        return x

    def rotary_tables(self, rows: int, s: int) -> int:
        """DeepseekV3RotaryEmbedding.forward on position_ids [rows, s] -> cos + sin bytes
        [rows, s, d_rope]: ``position_ids[..., None].float() * inv_freq``, cat, cos and sin
        each times attention_scaling (fp32, cast to the model dtype: themselves in fp32)."""
        live, m, r = self.live, rows * s, self.spec.qk_rope_head_dim
        pos = live.take(m * FP32_BYTES)  # .float()
        freqs = live.take(m * r // 2 * FP32_BYTES)  # * inv_freq
        live.drop(pos)
        emb = live.take(m * r * FP32_BYTES)  # cat((freqs, freqs))
        raw = live.take(m * r * FP32_BYTES)  # emb.cos()
        live.take(m * r * FP32_BYTES)  # * attention_scaling
        live.drop(raw)
        raw = live.take(m * r * FP32_BYTES)  # emb.sin()
        live.take(m * r * FP32_BYTES)  # * attention_scaling
        live.drop(freqs, emb, raw)
        return 2 * m * r * self.cb

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        """DeepseekV3Model.forward on inputs_embeds (taken by the caller) -> the final norm's
        output; layers below first_k_dense_replace dense, the others MoE."""
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        kept, rows = [], self.b  # generate() passes position_ids [b, s]
        if self.sh.engine not in ENGINES_PASSING_POSITION_IDS:
            r = live.take(s * INDEX_BYTES)  # arange(s)
            kept.append(live.take(s * INDEX_BYTES))  # + past_seen_tokens: position_ids
            live.drop(r)
            rows = 1
        kept.append(self.mask(s, start + s))
        kept.append(self.rotary_tables(rows, s))
        n_layers = dict(spec.stacks)[stack]
        kinds = ["dense" if i in spec.dense_layers else "moe" for i in range(n_layers)]
        inputs = [0] + [nd] * n_layers  # each layer's input (0: inputs_embeds, the caller's)
        last, pending = None, 0  # a steady layer's (top, delta) from its input's drop on
        for i, kind in enumerate(kinds):
            if last is not None and kind == kinds[i - 1]:
                pending += 1  # as the layer before it (Pass.stack: layers 3.. repeat 2)
                continue
            if pending:
                live.repeat(pending, *last)
            pending = 0
            live.drop(inputs[i - 1] if i else 0)  # the previous layer's input goes
            self.kind = kind
            top, delta = live.measure(lambda: self.layer(stack, s, start, cross_s, cache))
            last = (top - nd, delta - nd) if i >= 2 else None
        if pending:
            live.repeat(pending, *last)
        live.drop(inputs[n_layers - 1] if n_layers else 0)  # the last layer's input
        y = self.norm(s)
        live.drop(inputs[n_layers] if n_layers else 0)
        live.drop(*kept, nd)  # the base model returns: its locals and inputs_embeds go
        return y

    def attention(self, s: int, start: int, stack: str, cross_s: int = 0, cache=None) -> int:
        """DeepseekV3Attention.forward on the norm output [b, s, d] -> o_proj's output."""
        live, spec, b, cb, n = self.live, self.spec, self.b, self.cb, self.b * s
        h, r_kv, rope = spec.n_heads, spec.kv_lora_rank, spec.qk_rope_head_dim
        q_bytes = n * h * spec.head_dim * cb  # [b, s, h, d_nope + d_rope]
        if spec.q_lora_rank is None:
            q = live.take(q_bytes)  # q_proj
        else:
            q_a = live.take(n * spec.q_lora_rank * cb)  # q_a_proj
            normed = self.rms(n, spec.q_lora_rank)  # q_a_layernorm
            live.drop(q_a)
            q = live.take(q_bytes)  # q_b_proj
            live.drop(normed)
        c = live.take(n * (r_kv + rope) * cb)  # kv_a_proj_with_mqa: compressed_kv
        kv = self.rms(n, r_kv)  # kv_a_layernorm(kv_nope), on a split view of c
        q_rot = self.rotate(n * h * rope * cb)
        k_rot = self.rotate(n * rope * cb)
        s_k = s
        if cache is not None:  # DynamicLayer.update: keys (kv_nope) then values (k_rot)
            held, s_k = cache[0], cache[0] + s
            live.take(b * s_k * r_kv * cb)  # torch.cat([past, kv_nope])
            live.drop(b * held * r_kv * cb)  # the old keys' storage
            live.take(b * s_k * rope * cb)  # torch.cat([past, k_rot])
            live.drop(b * held * rope * cb)
            live.drop(kv, k_rot)  # rebound to the cache's
            kv = k_rot = 0
        query = live.take(q_bytes)  # cat((q_pass, q_rot))
        kv_b = live.take(b * s_k * h * (spec.qk_nope_head_dim + spec.v_head_dim) * cb)
        key = live.take(b * h * s_k * spec.head_dim * cb)  # new_empty, copy_ in place
        o = self.sdpa_math(s, s_k) if self.sh.attention_impl != "eager" else self.eager(s, s_k)
        y = live.take(n * spec.d_model * cb)  # o_proj
        live.drop(o, q, c, kv, q_rot, k_rot, query, kv_b, key)  # the function returns
        return y

    def values_copy(self, s_k: int) -> int:
        """matmul(probs, value_states): value [b, h, T, d_v] is a transposed split view of
        kv_b_proj's output [b, T, h, d_nope + d_v]; folding [b, h] copies it unless b = 1
        or T = 1 (the same fold as deepseek_v3.eager_value_saved)."""
        spec = self.spec
        if self.b == 1 or s_k == 1:
            return 0
        return self.live.take(self.b * spec.n_heads * s_k * spec.v_head_dim * self.cb)

    def out(self, s: int, o: int) -> int:
        """``attn_output.transpose(1, 2).contiguous()``: a copy when s > 1."""
        if s == 1:
            return o
        clone = self.live.take(o)
        self.live.drop(o)
        return clone

    def eager(self, s: int, s_k: int) -> int:
        """eager_attention_forward (h_kv = h: repeat_kv returns k, v) -> the output bytes."""
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        p = b * spec.n_heads * s * s_k * cb
        live.take(p)  # q @ k^T
        for _ in range(3):  # * scaling, + attention_mask, softmax (fp32 in, fp32 out)
            live.take(p)
            live.drop(p)
        v = self.values_copy(s_k)
        o = live.take(b * spec.n_heads * s * spec.v_head_dim * cb)  # probs @ v
        live.drop(v)
        self.probs += p  # attn_weights: the layer's ``_`` until it returns
        return self.out(s, o)

    def sdpa_math(self, s: int, s_k: int) -> int:
        """sdpa_attention_forward -> F.scaled_dot_product_attention's math fallback on CPU
        (no mask from create_causal_mask; is_causal when s > 1) -> the output bytes. CUDA
        runs other kernels: the estimate's device note says so (not measured here)."""
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        h, d_qk = spec.n_heads, spec.head_dim
        p = b * h * s * s_k * cb
        qs = live.take(b * h * s * d_qk * cb)  # q * sqrt(scale)
        causal, bias = s > 1, 0
        if causal:  # is_causal: ones(s, T).tril() -> where(tril, 0, -inf)
            ones = live.take(s * s_k * BOOL_BYTES)
            tril = live.take(s * s_k * BOOL_BYTES)
            live.drop(ones)
            scalars = live.take(2 * FP32_BYTES)  # two scalar_tensor
            bias = live.take(s * s_k * cb)
            live.drop(tril, scalars)
        ks = live.take(b * h * s_k * d_qk * cb)  # k^T * sqrt(scale)
        live.take(p)  # bmm
        live.drop(ks)
        if causal:
            live.take(p)  # + attn_bias
            live.drop(p)
        live.take(p)  # _safe_softmax
        live.drop(p)
        v = self.values_copy(s_k)
        o = live.take(b * h * s * spec.v_head_dim * cb)  # bmm
        live.drop(v, p, qs, bias)
        return self.out(s, o)

    def mlp(self, s: int, width: int) -> int:
        """DeepseekV3MLP of ``width``: down(act(gate(x)) * up(x)) (Pass.ffn's steps)."""
        live, inner = self.live, self.act(s, width)
        live.take(inner)  # gate_proj
        rule("replay.ffn.act", self.spec)(live, inner, self.spec.activation_fn)
        live.take(inner, inner)  # up_proj, the product
        live.drop(2 * inner)
        y = live.take(self.act(s, self.spec.d_model))  # down_proj
        live.drop(inner)
        return y

    def ffn(self, s: int) -> int:
        """The layer's mlp: DeepseekV3MLP (dense layers) or DeepseekV3MoE."""
        if self.kind == "dense":
            return self.mlp(s, self.spec.d_ff)
        return self.moe(s)

    def router(self, n: int) -> int:
        """DeepseekV3TopkRouter.forward over n tokens (fp32 throughout) -> the bytes of
        router_logits [n, E] (held by the block); topk_weights [n, k] fp32 and topk_indices
        [n, k] int64 stay live too (``routed``)."""
        live, spec, f = self.live, self.spec, FP32_BYTES
        E, k, G, tg = (spec.n_experts, spec.n_experts_per_token, spec.router_groups,
                       spec.router_topk_groups)  # fmt: skip
        logits = live.take(n * E * f)  # F.linear in fp32
        scores = live.take(n * E * f)  # sigmoid
        choice = live.take(n * E * f)  # + e_score_correction_bias
        live.take(n * G * 2 * f, n * G * 2 * INDEX_BYTES)  # .topk(2) per group
        live.drop(n * G * 2 * INDEX_BYTES)  # [0]: the values
        group_scores = live.take(n * G * f)  # .sum(-1)
        live.drop(n * G * 2 * f)
        live.take(n * tg * f, n * tg * INDEX_BYTES)  # topk over the groups
        live.drop(n * tg * f)  # [1]: the indices
        group_idx = n * tg * INDEX_BYTES
        group_mask = live.take(n * G * f)  # zeros_like, scatter_ in place
        # expand + reshape: a copy (each group holds >= 2 experts, for the group's topk(2))
        score_mask = live.take(n * E * f)
        live.take(n * E * BOOL_BYTES, n * E * BOOL_BYTES)  # .bool(), ~
        live.drop(n * E * BOOL_BYTES)
        masked = live.take(n * E * f)  # masked_fill
        live.drop(n * E * BOOL_BYTES, choice)  # ~mask; the old scores_for_choice
        live.take(n * k * f, n * k * INDEX_BYTES)  # topk over the experts
        live.drop(n * k * f)  # [1]: the indices
        gathered = live.take(n * k * f)  # scores.gather
        denominator = 0
        if spec.router_norm_topk:
            total = live.take(n * f)  # sum
            denominator = live.take(n * f)  # + 1e-20; ``/=`` in place
            live.drop(total)
        live.take(n * k * f)  # * routed_scaling_factor
        live.drop(gathered, denominator, scores, masked, group_scores, group_idx)
        live.drop(group_mask, score_mask)  # the router returns
        return logits

    def moe(self, s: int) -> int:
        """DeepseekV3MoE.forward on the norm output [b, s, d] -> its output [b, s, d]: the
        router, the grouped_mm experts (MoEPass.experts), the shared MLP on the same input,
        their sum; then the block's locals go."""
        live, spec, n = self.live, self.spec, self.b * s
        k = spec.n_experts_per_token
        logits = self.router(n)
        routed = n * k * (FP32_BYTES + INDEX_BYTES)  # topk_weights, topk_indices
        experts = self.experts(n)
        shared = self.mlp(s, spec.shared_expert_d_ff)
        y = live.take(self.act(s, spec.d_model))  # experts + shared_experts(residuals)
        live.drop(experts, shared, logits, routed)
        return y


@register("replay.pass", CLASS)
@register("replay.step", CLASS)
def deepseek_v3_pass(spec: ModelSpec, sh: Shapes, live: Live) -> DeepseekV3Pass:
    """DeepseekV3ForCausalLM's no-grad forward: ``DeepseekV3Pass``."""
    return DeepseekV3Pass(spec, sh, live)
