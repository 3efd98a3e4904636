"""Phi-3's rules (transformers modeling_phi3, issue 22), registered for the class
Phi3ForCausalLM where its code differs from Llama's; everything else is the Llama rules
(estimator/rules/hf/decoders.py). Measured in tests/tgauge/test_hf_rules_families.py."""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.decoders import FP32_BYTES, builds_cache, sdpa_gets_mask
from estimator.rules.hf.decoders_pass import HFPass
from estimator.rules.live import Live
from estimator.rules.reference.saved import eager_qkv_saved as reference_eager_qkv
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec


@register("saved.ffn.gated", "Phi3ForCausalLM")
def gated_ffn_saved(spec: ModelSpec, sh: Shapes, n: Any) -> dict[str, Any]:
    """Phi3MLP.forward: ``gate, up_states = gate_up_proj(x).chunk(2, dim=-1)``; the
    activation saves ``gate``, a view of the whole [n, 2 d_ff] output (its storage counted
    there), and ``up_states * act(gate)`` saves the same storage again (a view) and the
    activation's output [n, d_ff]."""
    inner = n * spec.d_ff * sh.ib
    return {"ffn.act": 2 * inner, "ffn": inner}


# ---- issue 22d: sdpa, eager at b = 1, and the no-grad forward (prefill / decode) -----------


@register("params.layer_shapes", "Phi3ForCausalLM")
def layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """Phi3DecoderLayer's parameters in registration order (what a for-loop optimizer step
    walks): self_attn (Phi3Attention.__init__: o_proj, then qkv_proj), mlp (gate_up_proj,
    down_proj), input_layernorm, post_attention_layernorm; no biases (Phi-3's Linears)."""
    d, d_q, d_kv, d_ff = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff
    return ((d, d_q), (d_q + 2 * d_kv, d), (2 * d_ff, d), (d, d_ff), (d,), (d,))


@register("saved.eager_qkv", "Phi3ForCausalLM")
def eager_qkv_saved(spec: ModelSpec, sh: Shapes, b: Any, s_q: Any, s_kv: Any) -> tuple[Any, Any]:
    """modeling_phi3.apply_rotary_pos_emb ends in ``torch.cat([rotated, q_pass], dim=-1)``: q
    and k are new contiguous [b, h, s, d_h] tensors, not views of qkv_proj's output (GPT-2's
    c_attn case of the "hf" rule), so eager_attention_forward's matmuls save what the
    reference counts at every b: q, k and v (repeat_kv's copies under GQA)."""
    return reference_eager_qkv(spec, sh, b, s_q, s_kv)


@register("saved.sdpa", "Phi3ForCausalLM")
def sdpa_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any, masked: bool,
               fused_mask: bool, window: int | None, cross: bool) -> dict[str, Any]:  # fmt: skip
    """integrations/sdpa_attention.py sdpa_attention_forward on CPU flash (as the "hf" rule:
    out, the fp32 logsumexp, repeat_kv's copies and the float mask once a sliding window
    reaches the keys), but q is apply_rotary_pos_emb's cat (its own [b, h, s, d_h]); k and v
    the DynamicCache's torch.cat copies when a training forward builds one, else the rotated
    k (a cat) and v, a view of qkv_proj's output (its whole storage). The kernel's output
    follows q's contiguous [b, h, s, d_h] layout, so sdpa_attention_forward's
    ``attn_output.transpose(1, 2).contiguous()`` copies it: o_proj's input, a new tensor."""
    h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
    mask = sdpa_gets_mask(s_k, fused_mask, window)
    if mask and h_kv < h:
        kv = 2 * b * h * s_k * d_h  # repeat_kv: expand + reshape, a copy each
    elif builds_cache(sh):
        kv = 2 * b * h_kv * s_k * d_h
    else:
        kv = b * h_kv * s_k * d_h + b * s * (h + 2 * h_kv) * d_h  # rotated k; qkv (v's base)
    out = b * s * h * d_h
    entries = out + kv + out + (b * s * s_k if mask else 0)  # q, k, v, out, mask
    lse = b * h * s * FP32_BYTES
    return {"sdpa": entries * sh.cb + lse, "o_proj": out * sh.cb}


class Phi3Pass(HFPass):
    """One no-grad forward of Phi3ForCausalLM (estimator/rules/hf/decoders_pass.HFPass where
    modeling_phi3 differs from Llama): partial rotary on q, k; q contiguous for the kernels;
    one gate_up_proj whose output stays live through the MLP."""

    def rotate(self, x: int) -> int:
        """modeling_phi3.apply_rotary_pos_emb with rotary_dim r of d_h (x bytes of q or k, a
        view of qkv_proj's output): HFPass.rotate's steps (modeling_llama's) over the r
        rotated dims, then ``torch.cat([.., q_pass], dim=-1)`` [.., d_h], which Llama has
        not -> the rotated copy."""
        live, r = self.live, x * (self.spec.rotary_dim or self.spec.head_dim) // self.spec.head_dim
        super().rotate(r)
        live.take(x)  # torch.cat([rotated, q_pass])
        live.drop(r)
        return x

    def core(self, s: int, s_k: int) -> int:
        """The kernels on a contiguous q [b, h, s, d_h]: eager's matmul needs no copy of q;
        the sdpa output follows q's layout, so transpose(1, 2).contiguous() copies it."""
        live, spec = self.live, self.spec
        a = self.b * s * spec.n_heads * spec.head_dim * self.cb
        if self.sh.attention_impl == "eager":
            return self.eager_core(s, s_k, q_copy=False)
        out = super().core(s, s_k)
        if s == 1:  # [b, h, 1, d_h]: the transpose is contiguous
            return out
        live.take(a)  # transpose(1, 2).contiguous()
        live.drop(out)
        return a

    def ffn(self, s: int) -> int:
        """Phi3MLP.forward: ``up_states = gate_up_proj(x)`` [n, 2 d_ff], ``gate, up_states =
        chunk(2)`` (views), ``up_states = up_states * act(gate)`` (F.silu: one new tensor);
        ``gate`` keeps the projection's output until the MLP returns."""
        live, inner = self.live, self.act(s, self.spec.d_ff)
        live.take(2 * inner)  # gate_up_proj
        live.take(inner)  # act(gate)
        live.take(inner)  # up_states * act(gate)
        live.drop(inner)  # act(gate)
        y = live.take(self.act(s, self.spec.d_model))  # down_proj
        live.drop(inner, 2 * inner)
        return y


@register("replay.pass", "Phi3ForCausalLM")
@register("replay.step", "Phi3ForCausalLM")
def phi3_pass(spec: ModelSpec, sh: Shapes, live: Live) -> Phi3Pass:
    """Phi3ForCausalLM's no-grad forward: ``Phi3Pass``."""
    return Phi3Pass(spec, sh, live)
