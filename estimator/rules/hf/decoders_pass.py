"""The no-grad forward replay (estimator/replay/inference.py) of transformers' decoder-only LMs
(GPT-2, Llama, Mistral; transformers 5.x), registered as the "hf" rule of ``replay.pass``.

Where the Hugging Face forward differs from reference_model/ (read op by op with the live
tracker, profiler/live.py, on the real classes):
  once per forward   cache_position (arange [s] int64); GPT-2: wpe(position_ids) [1, s, d]
                     and inputs_embeds + it; the mask of masking_utils.create_causal_mask:
                     eager a float [b, 1, s, s_k] (where(bool, 0, min)), sdpa none (is_causal)
                     unless a sliding window reaches the keys (a bool [1, 1, s, s_k]); rotary
                     cos, sin [1, s, d_h] (LlamaRotaryEmbedding). All freed when the base
                     model returns, with inputs_embeds, before the LM head.
  projections        GPT-2's c_attn: one [n, (h + 2 h_kv) d_h] output, q, k, v its views
  rotary             apply_rotary_pos_emb: q * cos, rotate_half (neg, cat), * sin, add
  cache              DynamicLayer.update: torch.cat(past, new) for k then v (a sliding-window
                     layer keeps a view of the whole cat); the old storages go
  eager              repeat_kv copies k, v to h heads (GQA); matmul copies q (a transposed
                     view, s > 1); scores, * scaling, + mask, softmax; probs @ v; transpose +
                     contiguous (s > 1); the probabilities, returned as attn_weights, stay
                     live until the decoder layer returns (through its MLP)
  sdpa               CPU flash: out + logsumexp; with a mask: repeat_kv copies and the float
                     mask sdpa makes of the bool one [b, 1, s, s_k]
  gelu_new           0.5 x, pow, * 0.044715 live at once with up's output (written out)
"""

from __future__ import annotations

from estimator.rules.hf.activations import PROGRAMS, program_forward
from estimator.rules.hf.decoders import sdpa_gets_mask
from estimator.rules.hf.precision import fp32_softmax_copy, softmax_converts_input
from estimator.rules.live import Live
from estimator.rules.reference.passes import FP32_BYTES, Pass
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec
from estimator.sym import vmin

#: classes whose decoder layer keeps the attention's output in a local until it returns
#: (modeling_gpt2.GPT2Block: ``attn_output, self_attn_weights = self.attn(...)``, then
#: ``hidden_states = attn_output + residual``); Llama and Mistral rebind hidden_states
HOLDS_ATTN_OUTPUT = frozenset({"GPT2LMHeadModel", "GPT2Model"})


#: serving engines (Workload.engine) that pass position_ids [b, s] to the forward:
#: transformers' generate() (generation/utils.py _prepare_position_ids_for_generation:
#: ``attention_mask.long().cumsum(-1) - 1``), not the plain model call
ENGINES_PASSING_POSITION_IDS = frozenset({"hf-generate"})


class HFPass(Pass):
    """One forward of a transformers decoder-only LM over ``s`` new tokens per sequence."""

    probs = 0  # eager attention's probabilities (and an attention output), held by the layer
    attn_out = 0

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        """The decoder layer; its ``attn_weights`` local (eager) goes when it returns."""
        super().layer(stack, s, start, cross_s, cache)
        self.live.drop(self.probs)
        self.probs = 0

    def sublayer(self, s: int, fn) -> int:
        """Pass.sublayer; an attention output the layer holds (``HOLDS_ATTN_OUTPUT``) stays."""
        x = super().sublayer(s, fn)
        self.probs += self.live.take(self.attn_out)
        self.attn_out = 0
        return x

    def window(self) -> int | None:
        st = self.sh.stack("decoder")
        return st.window if st.pattern == "sliding_window" else None

    def keys_visible(self, start: int) -> int:
        """Past positions the attention sees (DynamicSlidingWindowLayer: at most w - 1)."""
        w = self.window()
        return start if w is None else vmin(start, w - 1)

    def mask(self, s: int, s_k: int) -> int:
        """masking_utils.create_causal_mask -> bytes it keeps for the whole forward."""
        live = self.live
        if self.sh.attention_impl == "eager":
            ok = live.take(s * s_k)  # the bool [1, 1, s, s_k]
            kept = live.take(self.b * s * s_k * self.cb)  # where(ok, 0, min)
            live.drop(ok)
            return kept
        if sdpa_gets_mask(s_k, self.window() is not None, self.window()):
            return live.take(s * s_k)  # bool [1, 1, s, s_k], expanded to b
        return 0

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        """The base model's forward on inputs_embeds (taken by the caller) -> last hidden."""
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        kept = [live.take(s * INDEX_BYTES)]  # cache_position (position_ids: a view)
        x0 = 0
        if spec.position == "learned":  # wpe(position_ids): [1, s, d], or [b, s, d] when the
            # caller passes position_ids [b, s] (generate(): from the attention mask's cumsum)
            rows = self.b if self.sh.engine in ENGINES_PASSING_POSITION_IDS else 1
            kept.append(live.take(rows * s * spec.d_model * self.cb))
            x0 = live.take(nd)  # inputs_embeds + position_embeds
        kept.append(self.mask(s, self.keys_visible(start) + s))
        if spec.position == "rotary":
            rd = spec.rotary_dim or spec.head_dim  # partial rotary (Phi-3, GPT-NeoX): r dims
            kept.append(live.take(2 * s * rd * self.cb))  # cos, sin [1, s, r]
        n_layers = dict(spec.stacks)[stack]
        inputs = [x0] + [nd] * n_layers
        for i in range(min(n_layers, 3)):
            if i:
                live.drop(inputs[i - 1])
            top, delta = live.measure(lambda: self.layer(stack, s, start, cross_s, cache))
        if n_layers > 3:  # layers 3.. repeat layer 2 (Pass.stack)
            live.repeat(n_layers - 3, top - nd, delta - nd)
        y = self.norm(s) if spec.final_norm else 0
        live.drop(inputs[n_layers - 1] if n_layers else 0)
        if y:
            live.drop(inputs[n_layers])
        live.drop(*kept, nd)  # the base model returns: its locals and inputs_embeds go
        return y or inputs[n_layers]

    def rotate(self, x: int) -> int:
        """modeling_llama.apply_rotary_pos_emb on one of q, k (x bytes): q * cos,
        rotate_half (-x2, cat), * sin, the sum -> the rotated copy."""
        live = self.live
        live.take(x)  # x * cos
        live.take(x // 2)  # -x2
        live.take(x)  # cat
        live.drop(x // 2)
        live.take(x)  # rotate_half(x) * sin
        live.drop(x)  # the cat
        live.take(x)  # the sum
        live.drop(x, x)
        return x

    def attention(self, s: int, start: int, stack: str, cross_s: int = 0, cache=None) -> int:
        """The self-attention module on the norm output [b, s, d] -> o_proj output."""
        live, spec = self.live, self.spec
        h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
        a, kv = self.act(s, h * d_h), self.act(s, h_kv * d_h)
        if spec.fused_qkv:  # c_attn: q, k, v are views of one output, held to the end
            base, q, k, v = live.take(a + 2 * kv), 0, 0, 0
        else:  # q, k, v: bytes of their own storages
            base, q, k, v = 0, live.take(a), live.take(kv), live.take(kv)
        if spec.position == "rotary":
            q_rot, k_rot = self.rotate(a), self.rotate(kv)
            live.drop(q, k)  # q_proj's, k_proj's outputs (the names rebound)
            q, k = q_rot, k_rot
        s_k = s
        if cache is not None:
            s_k = self.keys_visible(start) + s
            cast = live.take(self.kv_bytes(s)) if self.cache_cast else 0  # to kv_cache_dtype
            live.take(self.kv_bytes(s_k))  # torch.cat for k, v: the cache's
            live.drop(self.kv_bytes(cache[0]), cast, k, v)  # the old storages; the new k, v
            k = v = 0
        o = self.core(s, s_k)
        y = live.take(self.act(s, spec.d_model))  # o_proj
        live.drop(o, q, k, v, base)
        if spec.hf_architecture in HOLDS_ATTN_OUTPUT:
            self.attn_out = y  # Pass.sublayer drops it after the residual add: kept back
        return y

    def core(self, s: int, s_k: int) -> int:
        """eager_attention_forward / sdpa_attention_forward -> bytes held for o_proj."""
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
        a, a_k = b * h * s * d_h * cb, b * h * s_k * d_h * cb
        eager = self.sh.attention_impl == "eager"
        mask = not eager and sdpa_gets_mask(s_k, self.window() is not None, self.window())
        if eager:
            return self.eager_core(s, s_k, s > 1)
        reps = live.take(a_k) + live.take(a_k) if h_kv < h and mask else 0
        m = live.take(b * s * s_k * cb) if mask else 0  # the bool mask as float
        live.take(a, b * h * s * FP32_BYTES)  # out, logsumexp
        live.drop(m, b * h * s * FP32_BYTES, reps)
        return a  # [b, s, h, d_h] underneath: the transpose is contiguous

    def score_ops(self) -> int:
        """Elementwise ops of eager_attention_forward (modeling_llama, modeling_gpt2) on the
        scores [b, h, s, s_k] before softmax, each a new tensor: ``* scaling``, ``+ mask``."""
        return 2

    def eager_core(self, s: int, s_k: int, q_copy: bool) -> int:
        """eager_attention_forward -> bytes held for o_proj; ``q_copy``: matmul makes q
        contiguous (a transposed view of the projection, s > 1); ``score_ops`` new scores
        before the softmax."""
        live, spec, b, cb = self.live, self.spec, self.b, self.cb
        h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
        a, a_k = b * h * s * d_h * cb, b * h * s_k * d_h * cb
        reps = live.take(a_k) + live.take(a_k) if h_kv < h else 0
        p = b * h * s * s_k * cb
        q_copy = live.take(a) if q_copy else 0  # matmul: q contiguous
        live.take(p)  # q @ k^T
        live.drop(q_copy)
        for _ in range(self.score_ops()):  # each frees the previous
            live.take(p)
            live.drop(p)
        if fp32_softmax_copy(spec, self.sh):  # softmax(dtype=float32).to(query.dtype)
            p32 = p * FP32_BYTES // cb
            converted = live.take(p32) if softmax_converts_input(self.sh) else 0
            live.take(p32)
            live.drop(converted)
            live.take(p)  # .to(query.dtype); the scores go when attn_weights is rebound
            live.drop(p, p32)
        else:  # softmax
            live.take(p)
            live.drop(p)
        out = live.take(a)  # probs @ v
        clone = live.take(a) if s > 1 else 0  # transpose(1, 2).contiguous()
        live.drop(reps)
        self.probs += p  # returned as attn_weights: the layer's local until it returns
        if clone:
            live.drop(out)
        return clone or out


@register("replay.pass", "hf")
@register("replay.step", "hf")
def hf_pass(spec: ModelSpec, sh: Shapes, live: Live) -> Pass:
    """A decoder-only transformers LM: ``HFPass``; other families: the reference replay."""
    if spec.arch != "decoder":
        return Pass(spec, sh, live)
    return HFPass(spec, sh, live)


@register("replay.ffn.act", "hf")
def act_forward(live: Live, inner: int, activation_fn: str | None = None) -> None:
    """A written-out activation (estimator/rules/hf/activations.PROGRAMS: gelu_new, gelu_fast,
    ...), else the reference's one new tensor."""
    program = PROGRAMS.get(activation_fn or "")
    if program is not None:
        program_forward(live, inner, program)
    else:
        live.take(inner)
        live.drop(inner)
