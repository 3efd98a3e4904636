"""Gemma 2's rules (transformers modeling_gemma2, issue 22), registered for the class
Gemma2ForCausalLM where its code differs from Llama's (estimator/rules/hf/decoders.py).
Measured in tests/tgauge/test_hf_rules_families.py (CPU, fp32, eager, training; issue 22g:
prefill and decode with the cache, ``Gemma2Pass``).

Gemma2PreTrainedModel sets ``_supports_sdpa = False``: transformers 5.24
(modeling_utils.PreTrainedModel.get_correct_attn_implementation) falls back to eager when no
implementation is asked for and raises ValueError when sdpa is, so Gemma 2 trains with
eager_attention_forward only (attention_impl='fused' is refused here by name).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.decoders_pass import ENGINES_PASSING_POSITION_IDS, HFPass
from estimator.rules.hf.precision import hf_eager_softmax_saved, hf_loss_saved
from estimator.rules.live import Live
from estimator.rules.reference.backward import Walker, sandwich_layer
from estimator.rules.reference.saved import norm_saved as reference_norm_saved
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
CLASS = "Gemma2ForCausalLM"


@register("params.layer_shapes", CLASS)
def layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """Gemma2DecoderLayer's parameters in registration order (what a for-loop optimizer step
    walks): self_attn (q_proj, k_proj, v_proj, o_proj; biases with ``attention_bias``), mlp
    (gate_proj, up_proj, down_proj), then input_layernorm, post_attention_layernorm,
    pre_feedforward_layernorm, post_feedforward_layernorm."""
    d, d_q, d_kv, d_ff = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff

    def linear(d_in: int, d_out: int, bias: bool) -> tuple[tuple[int, ...], ...]:
        return ((d_out, d_in), (d_out,)) if bias else ((d_out, d_in),)

    qkv, o = spec.qkv_bias, spec.o_bias
    attn = linear(d, d_q, qkv) + linear(d, d_kv, qkv) * 2 + linear(d_q, d, o)
    mlp = linear(d, d_ff, False) * 2 + linear(d_ff, d, False)
    return attn + mlp + ((d,),) * 4


@register("saved.norm", CLASS)
def norm_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Gemma2RMSNorm.forward in fp32: ``x.float()`` is x itself, which pow and ``x * rsqrt``
    save, rsqrt its output [n, 1], then ``output * (1.0 + self.weight.float())`` saves the
    normalized [n, d] and the new (1 + w) [d] (both require grad): the reference's count
    plus d values per call."""
    return reference_norm_saved(spec, sh, n) + spec.d_model * sh.cb


@register("saved.layer", CLASS)
def sandwich_layer_saved(spec: ModelSpec, sh: Shapes, t: dict[str, Any], n: Any) -> dict[str, Any]:
    """Gemma2DecoderLayer: post_attention_layernorm on o_proj's output and
    post_feedforward_layernorm on down_proj's (new tensors each) save a norm's set."""
    return {**t, "attn_out_norm": norm_saved(spec, sh, n), "ffn_out_norm": norm_saved(spec, sh, n)}


@register("saved.eager_softmax", CLASS)
def softcap_scores_saved(spec: ModelSpec, sh: Shapes, b: Any, entries: Any) -> Any:
    """eager_attention_forward with ``softcap``: ``attn_weights / softcap`` (a scalar: saves
    nothing), torch.tanh saves its output [b, h, s, s_k], ``* softcap`` nothing; then the
    "hf" rule's softmax."""
    return b * spec.n_heads * entries * sh.cb + hf_eager_softmax_saved(spec, sh, b, entries)


@register("saved.loss", CLASS)
def softcap_loss_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Gemma2ForCausalLM.forward's final soft-cap (``logits / cap``, torch.tanh, ``* cap``,
    in the root module): tanh saves its output [n, V]; then the "hf" loss."""
    return n * spec.vocab_size * sh.cb + hf_loss_saved(spec, sh, n)


@register("saved.final_softcap", "hf")
def no_softcap_module_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """transformers soft-caps the logits in the root module's forward: counted with the loss
    (``softcap_loss_saved``), not as a module of its own (issue 22p)."""
    return 0


@register("backward.layer", CLASS)
def sandwich_layer_backward(bw: Walker, p: str, n: Any, s: Any) -> bool:
    """Gemma2DecoderLayer's backward: the sandwich-norm walk the reference model's layer
    shares (estimator/rules/reference/backward.py ``sandwich_layer``)."""
    sandwich_layer(bw, p, n, s)
    return True


@register("backward.final_softcap", CLASS)
def final_softcap_backward(bw: Walker, logits: Any) -> None:
    """Gemma2ForCausalLM's ``logits / cap``, tanh, ``* cap`` backward from d(logits): MulBackward0
    (grad * cap), TanhBackward0 (a new grad; tanh's saved output freed), DivBackward0."""
    live = bw.live
    live.take(logits)  # * cap
    live.drop(logits)
    live.take(logits)  # tanh_backward
    live.drop(logits)
    bw.free("loss")  # tanh's output (what is left of the loss's saved set)
    live.take(logits)  # / cap
    live.drop(logits)


@register("unsupported", CLASS)
def unmeasured_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """sdpa does not run for Gemma 2 (module docstring); its rules are measured in fp32 without
    checkpointing."""
    if sh.attention_impl != "eager":
        return (
            f"attention_impl={sh.attention_impl!r} does not run for {spec.hf_architecture}: "
            "transformers sets Gemma2PreTrainedModel._supports_sdpa = False (eager only)"
        )
    if sh.cb != FP32_BYTES or sh.checkpointing != "none":
        return (
            f"dtype={sh.compute_dtype!r} with checkpointing={sh.checkpointing!r} is not "
            f"modelled for memory of {spec.hf_architecture} (measured: fp32, no checkpointing)"
        )
    return None


# ---- issue 22g: the no-grad forward (prefill, decode with the cache) -----------------------


class Gemma2Pass(HFPass):
    """One no-grad forward of Gemma2ForCausalLM (transformers 5.24 modeling_gemma2, eager
    attention): HFPass (estimator/rules/hf/decoders_pass.py) where Gemma 2's code differs.

    Gemma2Model.forward: ``embed_tokens(input_ids)`` (Gemma2TextScaledWordEmbedding: the
    lookup ``* embed_scale``, a new [b, s, d]; the lookup freed), position_ids (``arange(s) +
    past_seen_tokens``), both masks kept in ``causal_mask_mapping`` for the whole forward
    (masking_utils.create_causal_mask over the full layers' past + s keys and
    create_sliding_window_causal_mask over a sliding layer's cache, get_mask_sizes:
    min(past, w - 1) + s keys; eager: float [b, 1, s, s_k] each), the rotary cos, sin; each
    layer with its own kind (``config.layer_types``, spec.layer_pattern): a sliding layer's
    DynamicSlidingWindowLayer keeps a view of the last w - 1 positions of its torch.cat (the
    whole cat stays allocated), a full layer's DynamicLayer the whole cat."""

    kind = "full"

    def window(self) -> int | None:
        """The current layer's window (its kind), not the stack's."""
        return self.spec.sliding_window if self.kind == "sliding" else None

    def rms_weight(self) -> int:
        """Gemma2RMSNorm.forward on fp32 x (``x.float()`` is x): Pass.norm's steps, but the
        weight is ``1.0 + self.weight.float()``, a new [d] made before the product."""
        return self.live.take(self.spec.d_model * self.cb)

    def sublayer(self, s: int, fn) -> int:
        """Gemma2DecoderLayer's half: ``residual + post_norm(F(pre_norm(x)))``; F's output
        goes once the post norm's output rebinds it, that output once the sum is made."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        h = self.norm(s)
        r = fn()
        live.drop(h)  # rebound to F's output
        p = self.norm(s)
        live.drop(r)
        live.take(nd)  # residual + hidden_states
        live.drop(p)
        return nd

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        """Gemma2DecoderLayer.forward: the first half's sum is ``residual`` until the layer
        returns (the second sum is made while it is live); ``_`` (attn_weights) as well."""
        x_a = self.sublayer(s, lambda: self.attention(s, start, stack, 0, cache))
        self.sublayer(s, lambda: self.ffn(s))
        self.live.drop(x_a, self.probs)
        self.probs = 0

    def attention(self, s: int, start: int, stack: str, cross_s: int = 0, cache=None) -> int:
        """HFPass.attention; a full layer's cache held every one of the ``start`` positions."""
        if cache is not None and self.kind == "full":
            cache = (start, *cache[1:])
        return super().attention(s, start, stack, cross_s, cache)

    def score_ops(self) -> int:
        """modeling_gemma2.eager_attention_forward with ``softcap``: ``* scaling``, ``/
        softcap``, torch.tanh, ``* softcap``, ``+ attention_mask`` (HFPass.eager_core: each
        a new [b, h, s, s_k], the previous one freed on rebinding); without it Llama's two."""
        return 5 if self.spec.attn_softcap is not None else super().score_ops()

    def masks(self, s: int, start: int) -> list[int]:
        """causal_mask_mapping: the full layers' mask over start + s keys and, with a
        sliding layer, the sliding one over min(start, w - 1) + s (HFPass.mask each)."""
        kinds = set(self.spec.layer_pattern or ("full",))
        out = []
        for kind in ("full", "sliding"):
            self.kind = kind
            out.append(self.mask(s, self.keys_visible(start) + s) if kind in kinds else 0)
        return out

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        """Gemma2Model.forward on inputs_embeds (the caller's Pass.embed: the lookup and its
        ``* embed_scale``, spec.embed_scale) -> the final norm's output; every layer
        replayed with its own kind."""
        live, spec, nd = self.live, self.spec, self.act(s, self.spec.d_model)
        kept, rows = [], self.b  # generate() passes position_ids [b, s]: cos, sin [b, s, d_h]
        if self.sh.engine not in ENGINES_PASSING_POSITION_IDS:
            r = live.take(s * INDEX_BYTES)  # arange(s)
            kept.append(live.take(s * INDEX_BYTES))  # + past_seen_tokens: position_ids
            live.drop(r)
            rows = 1
        kept += self.masks(s, start)
        kept.append(live.take(2 * rows * s * spec.head_dim * self.cb))  # cos, sin [.., s, d_h]
        kinds = spec.layer_pattern or ("full",) * dict(spec.stacks)[stack]
        x, prev = 0, 0  # this layer's input, the previous one's (0: inputs_embeds, the caller's)
        for kind in kinds:
            live.drop(prev)  # the previous layer's input goes with its frame
            self.kind = kind
            self.layer(stack, s, start, cross_s, cache)
            x, prev = nd, x
        y = self.norm(s)
        live.drop(prev, x)
        live.drop(*kept, nd)  # the base model returns: its locals and inputs_embeds go
        return y

    def logits(self, s: int) -> int:
        """lm_head's output, then the final soft-cap: ``logits / cap``, torch.tanh,
        ``* cap``, each a new [b, s, V] made while the previous is live."""
        live, x = self.live, self.act(s, self.spec.vocab_size)
        live.take(x)  # lm_head
        if self.spec.final_softcap is not None:
            for _ in range(3):
                live.take(x)
                live.drop(x)
        return x


@register("replay.pass", CLASS)
@register("replay.step", CLASS)
def gemma2_pass(spec: ModelSpec, sh: Shapes, live: Live) -> Gemma2Pass:
    """Gemma2ForCausalLM's no-grad forward: ``Gemma2Pass``."""
    return Gemma2Pass(spec, sh, live)
