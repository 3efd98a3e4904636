"""Gemma 2's rules (transformers modeling_gemma2, issue 22), registered for the class
Gemma2ForCausalLM where its code differs from Llama's (estimator/rules/hf/decoders.py).
Measured in tests/tgauge/test_hf_rules_families.py (CPU, fp32, eager, training).

Gemma2PreTrainedModel sets ``_supports_sdpa = False``: transformers 5.24
(modeling_utils.PreTrainedModel.get_correct_attn_implementation) falls back to eager when no
implementation is asked for and raises ValueError when sdpa is, so Gemma 2 trains with
eager_attention_forward only (attention_impl='fused' is refused here by name).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.precision import hf_eager_softmax_saved, hf_loss_saved
from estimator.rules.reference.backward import Walker
from estimator.rules.reference.saved import norm_saved as reference_norm_saved
from estimator.rules.registry import register
from estimator.shapes import Shapes
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


@register("backward.layer", CLASS)
def sandwich_layer_backward(bw: Walker, p: str, n: Any, s: Any) -> bool:
    """Gemma2DecoderLayer's backward, the FFN sublayer then the attention's, each
    ``residual + post_norm(F(pre_norm(x)))`` from the residual's grad R (live before and
    after, AddBackward0 hands it to both): the output norm's backward on R (a new grad, R
    kept), freed once the branch's first linear has run (``bw.release``, as a dropout's
    grad); the branch; the input norm's backward; its grad summed into R's buffer."""
    live, nd = bw.live, n * bw.spec.d_model * bw.cb
    branches = (
        ("ffn_out_norm", "ffn_norm", lambda: bw.ffn(p, n)),
        ("attn_out_norm", "attn_norm", lambda: bw.attention(f"{p}.self_attn", s, s, nd, False)),
    )
    for post, pre, branch in branches:
        bw.release = bw.norm(f"{p}.{post}", 0, n)
        d_pre = bw.norm(f"{p}.{pre}", branch(), n)
        live.take(nd)  # summed into the residual's grad
        live.drop(d_pre, nd)
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
