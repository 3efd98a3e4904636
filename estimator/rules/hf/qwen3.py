"""Qwen3's rules (transformers modeling_qwen3, issue 22), registered for the class
Qwen3ForCausalLM where its code differs from Llama's; everything else is the Llama rules
(estimator/rules/hf/decoders.py, decoders_pass.py). Measured in
tests/tgauge/test_hf_rules_families.py (CPU, fp32, eager and sdpa, train / prefill / decode).

Qwen3Attention.forward (modeling_qwen3.py):
    query_states = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
    key_states = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
q_norm and k_norm are Qwen3RMSNorm(head_dim): LlamaRMSNorm's code over the last axis of
[b, s, h, d_h] (resp. h_kv), i.e. over b s h rows of d_h values. The rest is Llama's.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.reference.backward import Walker
from estimator.rules.reference.backward import rmsnorm as reference_rmsnorm_backward
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
CLASS = "Qwen3ForCausalLM"


def head_norm_saved(spec: ModelSpec, sh: Shapes, rows: Any) -> Any:
    """Qwen3RMSNorm.forward in fp32 over ``rows`` rows of d_h: ``hidden_states.to(float32)`` is
    the input itself, which pow saves (and ``hidden_states * rsqrt(...)`` again); rsqrt saves
    its output [rows, 1]; ``self.weight * hidden_states.to(input_dtype)`` saves the normalized
    [rows, d_h] (the weight is a parameter). Its input is q_proj's (k_proj's) output viewed
    [b, s, h, d_h]: nothing saved it before (a Linear saves its input, not its output)."""
    return 2 * rows * spec.head_dim * sh.cb + rows * FP32_BYTES


@register("saved.qk_norm", CLASS)
def qk_norm_saved(spec: ModelSpec, sh: Shapes, n_q: Any, n_k: Any) -> dict[str, Any]:
    """q_norm over n_q tokens times h heads, k_norm over n_k tokens times h_kv heads."""
    return {
        "q_norm": head_norm_saved(spec, sh, n_q * spec.n_heads),
        "k_norm": head_norm_saved(spec, sh, n_k * spec.n_kv_heads),
    }


@register("backward.qk_norm", CLASS)
def qk_norm_backward(bw: Walker, p: str, s: Any, s_k: Any, dq: Any, dk: Any) -> tuple[Any, Any]:
    """After the rotary backward (TransposeBackward0 is a view): k_norm's backward on dk,
    then q_norm's on dq (autograd runs the later-created node first), each the written-out
    RMSNorm's (reference_model/norms.py and Qwen3RMSNorm make the same ops in fp32) over
    b s h rows of d_h. -> the grads of q_proj's and k_proj's outputs (same sizes)."""
    spec = bw.spec
    dk = reference_rmsnorm_backward(bw, f"{p}.k_norm", dk, bw.b * s_k * spec.n_kv_heads,
                                    spec.head_dim)  # fmt: skip
    dq = reference_rmsnorm_backward(bw, f"{p}.q_norm", dq, bw.b * s * spec.n_heads, spec.head_dim)
    return dq, dk


@register("params.layer_shapes", CLASS)
def layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """Qwen3DecoderLayer's parameters in registration order (what a for-loop optimizer step
    walks): self_attn (q_proj, k_proj, v_proj, o_proj with ``attention_bias``, q_norm,
    k_norm), mlp (gate_proj, up_proj, down_proj, no bias), input_layernorm,
    post_attention_layernorm."""
    d, d_q, d_kv, d_ff, d_h = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff, spec.head_dim

    def linear(d_in: int, d_out: int, bias: bool) -> tuple[tuple[int, ...], ...]:
        return ((d_out, d_in), (d_out,)) if bias else ((d_out, d_in),)

    qkv, o = spec.qkv_bias, spec.o_bias
    attn = linear(d, d_q, qkv) + linear(d, d_kv, qkv) * 2 + linear(d_q, d, o)
    mlp = linear(d, d_ff, False) * 2 + linear(d_ff, d, False)
    return attn + ((d_h,), (d_h,)) + mlp + ((d,), (d,))


@register("unsupported", CLASS)
def low_dtype_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """The QK-norm rules are measured in fp32 without checkpointing: a low model dtype
    (Qwen3RMSNorm's fp32 copy of q and k, its ToCopyBackward0 grads) or checkpointing is
    refused by name."""
    if sh.cb != FP32_BYTES or sh.checkpointing != "none":
        return (
            f"dtype={sh.compute_dtype!r} with checkpointing={sh.checkpointing!r} is not "
            f"modelled for memory of {spec.hf_architecture}'s q_norm / k_norm (measured: "
            "fp32, no checkpointing)"
        )
    return None
