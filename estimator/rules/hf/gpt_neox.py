"""GPT-NeoX's rules (transformers modeling_gpt_neox, issue 22), registered for the class
GPTNeoXForCausalLM where its code differs from the Llama / GPT-2 rules
(estimator/rules/hf/decoders.py, decoders_pass.py). Measured in
tests/tgauge/test_hf_rules_families.py (CPU, fp32, eager and sdpa, train / prefill / decode).

GPTNeoXLayer.forward with ``use_parallel_residual`` (the default):
    attn_output = self.attention(self.input_layernorm(hidden_states), ...)
    mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
    hidden_states = mlp_output + attn_output + hidden_states
Both LayerNorms read the same x; GPTNeoXAttention.forward:
    qkv = self.query_key_value(hidden_states).view(b, s, -1, 3 * d_h).transpose(1, 2)
    query_states, key_states, value_states = qkv.chunk(3, dim=-1)
(q, k, v are views of one [n, 3 d] output, interleaved per head), then apply_rotary_pos_emb
rotates the first rotary_dim dims (cat with the pass-through part: new q, k tensors).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf import phi3
from estimator.rules.live import Live
from estimator.rules.reference.backward import Walker
from estimator.rules.reference.passes import Pass
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec

CLASS = "GPTNeoXForCausalLM"


@register("params.layer_shapes", CLASS)
def layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """GPTNeoXLayer's parameters in registration order (what a for-loop optimizer step
    walks): input_layernorm, post_attention_layernorm (weight, bias each), attention
    (query_key_value [3 d, d], dense [d, d], biases with ``attention_bias``), mlp
    (dense_h_to_4h, dense_4h_to_h, with biases)."""
    d, d_ff = spec.d_model, spec.d_ff

    def linear(d_in: int, d_out: int, bias: bool) -> tuple[tuple[int, ...], ...]:
        return ((d_out, d_in), (d_out,)) if bias else ((d_out, d_in),)

    norms = ((d,), (d,)) * 2
    attn = linear(d, 3 * d, spec.qkv_bias) + linear(d, d, spec.o_bias)
    return norms + attn + linear(d, d_ff, spec.ffn_bias) + linear(d_ff, d, spec.ffn_bias)


# q and k are apply_rotary_pos_emb's cats (contiguous [b, h, s, d_h]), v a view of the fused
# output: Phi-3's saved sets for the kernels (estimator/rules/hf/phi3.py)
register("saved.eager_qkv", CLASS)(phi3.eager_qkv_saved)
register("saved.sdpa", CLASS)(phi3.sdpa_saved)


@register("backward.layer", CLASS)
def parallel_layer_backward(bw: Walker, p: str, n: Any, s: Any) -> bool:
    """GPTNeoXLayer's backward from the output's grad g (live; ``mlp_output + attn_output +
    hidden_states``: AddBackward0 hands the same g to all three). The MLP branch runs first
    (its nodes are the later ones): dense_4h_to_h, gelu, dense_h_to_4h, then
    post_attention_layernorm -> a grad of x, summed with g into x's input buffer (a new
    tensor: g stays, the attention's too). Then the attention branch on g (dense, the kernel,
    rotary, query_key_value), g freed, input_layernorm (x and its statistics freed) -> the
    second grad of x, summed into the buffer."""
    live, nd = bw.live, n * bw.spec.d_model * bw.cb
    d_mlp = bw.norm(f"{p}.ffn_norm", bw.ffn(p, n), n)
    live.take(nd)  # g + d_mlp
    live.drop(d_mlp)
    d_attn = bw.attention(f"{p}.self_attn", s, s, nd, False)
    live.drop(nd)  # g: every branch done
    d_attn = bw.norm(f"{p}.attn_norm", d_attn, n)
    live.take(nd)  # summed into x's buffer
    live.drop(d_attn, nd)
    return True


@register("unsupported", CLASS)
def unmeasured_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """GPT-NeoX's parallel layers are measured in fp32 without checkpointing: a low model
    dtype or activation checkpointing is refused by name."""
    if sh.cb != phi3.FP32_BYTES or sh.checkpointing != "none":
        return (
            f"dtype={sh.compute_dtype!r} with checkpointing={sh.checkpointing!r} is not "
            f"modelled for memory of {spec.hf_architecture} (measured: fp32, no checkpointing)"
        )
    return None


class GPTNeoXPass(phi3.Phi3Pass):
    """One no-grad forward of GPTNeoXForCausalLM: Phi-3's attention (views of a fused
    projection, partial rotary, contiguous q), the plain MLP (dense_h_to_4h, F.gelu,
    dense_4h_to_h) and a parallel layer."""

    ffn = Pass.ffn

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        """GPTNeoXLayer.forward (use_parallel_residual): input_layernorm(x), attention;
        post_attention_layernorm(x), mlp; ``mlp_output + attn_output`` then ``+ x``;
        attn_output, mlp_output and ``_`` (eager's attn_weights) are locals until it returns."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        h = self.norm(s)
        a = self.attention(s, start, stack, cross_s, cache)
        live.drop(h)
        h = self.norm(s)
        m = self.ffn(s)
        live.drop(h)
        t = live.take(nd)  # mlp_output + attn_output
        live.take(nd)  # + hidden_states
        live.drop(t, m, a, self.probs)
        self.probs = 0


@register("replay.pass", CLASS)
@register("replay.step", CLASS)
def gpt_neox_pass(spec: ModelSpec, sh: Shapes, live: Live) -> GPTNeoXPass:
    """GPTNeoXForCausalLM's no-grad forward: ``GPTNeoXPass``."""
    return GPTNeoXPass(spec, sh, live)
