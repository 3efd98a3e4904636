"""DeepSeek-V3's rules (transformers 5.24 models/deepseek_v3/modeling_deepseek_v3.py, issue
22), registered for the class DeepseekV3ForCausalLM where its code differs from Llama's
(estimator/rules/hf/decoders.py): multi-head latent attention (DeepseekV3Attention) and the
parameter order of DeepseekV3DecoderLayer, and its MoE block (DeepseekV3MoE: the sigmoid,
group-limited router, moe.py's grouped_mm experts, the shared MLP). Measured in training (fp32,
eager and sdpa) in tests/tgauge/test_hf_rules_families.py (docs/validation.md); the no-grad
passes (prefill, decode) are deepseek_v3_pass.py's (issue 22s).

Not modelled here (issue 22v, left open): the backward walk is the Llama attention's and the
reference dense FFN's (estimator/replay/backward.py), not MLA's and the MoE block's node by
node.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.common import buffer_dtype
from estimator.rules.hf.moe import experts_saved
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
CLASS = "DeepseekV3ForCausalLM"


def _linear(d_in: int, d_out: int, bias: bool) -> tuple[tuple[int, ...], ...]:
    return ((d_out, d_in), (d_out,)) if bias else ((d_out, d_in),)


def attention_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """DeepseekV3Attention.__init__'s parameters in registration order: q_proj (no q_lora_rank)
    or q_a_proj (bias with ``attention_bias``), q_a_layernorm, q_b_proj; kv_a_proj_with_mqa
    (d -> kv_lora_rank + qk_rope_head_dim, bias with ``attention_bias``), kv_a_layernorm,
    kv_b_proj (kv_lora_rank -> h (nope + v_head_dim)), o_proj (h v_head_dim -> d)."""
    d, h, d_qk, bias = spec.d_model, spec.n_heads, spec.head_dim, spec.qkv_bias
    r_kv, rope, nope, d_v = (spec.kv_lora_rank, spec.qk_rope_head_dim, spec.qk_nope_head_dim,
                             spec.v_head_dim)  # fmt: skip
    if spec.q_lora_rank is None:
        q = _linear(d, h * d_qk, False)
    else:
        r_q = spec.q_lora_rank
        q = _linear(d, r_q, bias) + ((r_q,),) + _linear(r_q, h * d_qk, False)
    kv = _linear(d, r_kv + rope, bias) + ((r_kv,),) + _linear(r_kv, h * (nope + d_v), False)
    return q + kv + _linear(h * d_v, d, spec.o_bias)


@register("params.layer_shapes", CLASS)
def layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """A dense DeepseekV3DecoderLayer's parameters in registration order (what a for-loop
    optimizer step walks): self_attn (``attention_shapes``), mlp (DeepseekV3MLP: gate_proj,
    up_proj, down_proj, no bias), input_layernorm, post_attention_layernorm."""
    d, d_ff = spec.d_model, spec.d_ff
    mlp = ((d_ff, d), (d_ff, d), (d, d_ff))
    return attention_shapes(spec) + mlp + ((d,), (d,))


@register("params.moe_layer_shapes", CLASS)
def moe_layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """A DeepseekV3DecoderLayer whose mlp is DeepseekV3MoE: self_attn, then the MoE's
    experts (gate_up_proj [E, 2 d_e, d], down_proj [E, d, d_e]), gate (DeepseekV3TopkRouter:
    weight [E, d]; e_score_correction_bias is a buffer), shared_experts (DeepseekV3MLP of
    moe_intermediate_size * n_shared_experts: gate_proj, up_proj, down_proj), then
    input_layernorm, post_attention_layernorm."""
    d, E, d_e, d_s = spec.d_model, spec.n_experts, spec.expert_d_ff, spec.shared_expert_d_ff
    moe = ((E, 2 * d_e, d), (E, d, d_e), (E, d), (d_s, d), (d_s, d), (d, d_s))
    return attention_shapes(spec) + moe + ((d,), (d,))


def _norm_saved(sh: Shapes, n: Any, width: Any, storage: Any) -> Any:
    """DeepseekV3RMSNorm.forward (LlamaRMSNorm's code) in fp32 over [n, width]: pow and
    ``hidden_states * rsqrt(...)`` save the input (``storage``: the bytes of the storage it
    views), rsqrt its output [n, 1] fp32, ``self.weight * hidden_states`` the normalized
    [n, width]."""
    return storage + n * FP32_BYTES + n * width * sh.cb


def mla_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any) -> dict[str, Any]:
    """DeepseekV3Attention.forward's saved tensors over n = b s tokens (layer-relative names,
    the glossary's: estimator/terms/params.py _latent_attention):
    q_a_proj saves its input (the norm output), kv_a_proj_with_mqa the same storage (0);
    q_a_layernorm its input (q_a_proj's output, a new [n, r_q]), rsqrt, the normalized;
    q_b_proj its input (the norm's output); kv_a_layernorm's input ``kv_nope`` is a split
    view of compressed_kv, so pow saves the whole [n, r_kv + d_rope] storage; kv_b_proj its
    input [n, r_kv] (the norm output, or the DynamicCache's torch.cat copy of it when a
    training forward builds one: as many bytes); apply_rotary_pos_emb(_interleave) saves only
    cos and sin (``q1 * cos``: cos does not require grad, so MulBackward0 keeps cos alone);
    o_proj its input (the reshaped attention output [n, h d_v]). The attention core
    (``core_saved``) is the ``scores`` / ``mix`` / ``sdpa`` terms."""
    n, cb, d = b * s, sh.cb, spec.d_model
    r_kv, rope, h, d_v = spec.kv_lora_rank, spec.qk_rope_head_dim, spec.n_heads, spec.v_head_dim
    t: dict[str, Any] = {}
    if spec.q_lora_rank is None:
        t["q_proj"] = n * d * cb
    else:
        r_q = spec.q_lora_rank
        t["q_a_proj"] = n * d * cb
        t["q_a_norm"] = _norm_saved(sh, n, r_q, n * r_q * cb)
        t["q_b_proj"] = n * r_q * cb
    t["kv_a_proj"] = 0  # q's projection saved the same input
    t["kv_a_norm"] = _norm_saved(sh, n, r_kv, n * (r_kv + rope) * cb)
    t["kv_b_proj"] = n * r_kv * cb
    t["o_proj"] = n * h * d_v * cb
    return t


def eager_value_saved(spec: ModelSpec, sh: Shapes, b: Any, s_q: Any, s_k: Any) -> Any:
    """eager_attention_forward's ``torch.matmul(attn_weights, value)``: value is a split view
    of kv_b_proj's output [b, s_k, h, d_nope + d_v] transposed to [b, h, s_k, d_v]; folding
    it into [b h, s_k, d_v] copies when b > 1 (b and h cannot merge), and is a view at b = 1,
    so the matmul then saves kv_b_proj's whole output."""
    h, d_v, nope = spec.n_heads, spec.v_head_dim, spec.qk_nope_head_dim
    if b == 1:
        return s_k * h * (nope + d_v) * sh.cb
    return b * h * s_k * d_v * sh.cb


@register("saved.layer", CLASS)
def mla_layer_saved(spec: ModelSpec, sh: Shapes, t: dict[str, Any], n: Any) -> dict[str, Any]:
    """The Llama layer's terms with the attention's projections replaced by MLA's
    (``mla_saved``) and the values of the core by ``eager_value_saved`` (eager; q and k are
    [b, h, s, d_nope + d_rope], the Llama rule's count with head_dim = d_nope + d_rope)."""
    b, s = sh.b, sh.s
    out = {k: v for k, v in t.items()
           if not k.startswith("self_attn.") or k.split(".", 1)[1] in CORE}  # fmt: skip
    out.update({f"self_attn.{k}": v for k, v in mla_saved(spec, sh, b, s).items()})
    if sh.attention_impl == "eager":
        out["self_attn.mix"] = eager_value_saved(spec, sh, b, s, s)
    else:
        out["self_attn.sdpa"] = math_sdpa_saved(spec, sh, b, s, s)
    return out


def math_sdpa_saved(spec: ModelSpec, sh: Shapes, b: Any, s_q: Any, s_k: Any) -> Any:
    """sdpa_attention_forward with v_head_dim != qk head dim: torch's CPU flash kernel needs
    one head dim for q, k and v, so F.scaled_dot_product_attention runs the math fallback
    (aten/src/ATen/native/transformers/attention.cpp _scaled_dot_product_attention_math):
    ``q * sqrt(scale)`` [b, h, s, d_qk] and ``k^T * sqrt(scale)`` saved by their matmul, the
    causal mask added in place (nothing saved), _safe_softmax its output [b, h, s, s_k], the
    last matmul the values (``eager_value_saved``: a copy at b > 1, kv_b_proj's output at
    b = 1)."""
    h, d_qk = spec.n_heads, spec.head_dim
    qk = b * h * (s_q + s_k) * d_qk * sh.cb
    return qk + b * h * s_q * s_k * sh.cb + eager_value_saved(spec, sh, b, s_q, s_k)


#: the attention core's terms, kept from the Llama rules
CORE = ("scores", "scores.dropout", "mix", "sdpa")


@register("saved.rotary.stack", CLASS)
def rotary_stack_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """DeepseekV3RotaryEmbedding (``config.head_dim = qk_rope_head_dim``): cos and sin
    [1, s, d_rope], saved by the first layer's ``q1 * cos`` and ``q2 * sin`` (the interleaved
    form slices them: views of the same storages)."""
    return 2 * s * spec.qk_rope_head_dim * sh.cb


def router_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """DeepseekV3TopkRouter.forward over n tokens: F.linear of ``hidden_states.type(fp32)``
    saves its input (the norm output, fp32 here: itself); sigmoid its output [n, E];
    ``.topk(2)`` over each group's experts its indices [n, G, 2] int64 (``.sum`` nothing);
    torch.topk over the groups its indices [n, topk_group]; ``masked_fill(~score_mask.bool())``
    the bool mask [n, E]; torch.topk over the experts its indices [n, k] (``scores.gather``
    saves that same index and the sigmoid output); ``topk_weights /= denominator`` the
    weights [n, k] and the denominator [n, 1] fp32 (with ``norm_topk_prob``);
    ``* routed_scaling_factor`` nothing."""
    E, k = spec.n_experts, spec.n_experts_per_token
    ids = (2 * spec.router_groups + spec.router_topk_groups + k) * n * INDEX_BYTES
    div = (n * k + n) * FP32_BYTES if spec.router_norm_topk else 0
    return n * spec.d_model * sh.cb + n * E * FP32_BYTES + ids + n * E + div


@register("saved.ffn.moe", CLASS)
def moe_saved(spec: ModelSpec, sh: Shapes, n: Any) -> dict[str, Any]:
    """DeepseekV3MoE.forward over n tokens: the router (``router_saved``), the experts
    (estimator/rules/hf/moe.py experts_saved: grouped_mm_experts_forward, the same code),
    then shared_experts, a DeepseekV3MLP on the same norm output: gate_proj's input is the
    router's (0), act_fn saves the gate output [n, d_s], the product act(gate) and up, down
    its input [n, d_s]."""
    d_s, cb = spec.shared_expert_d_ff, sh.cb
    return {
        "ffn.router": router_saved(spec, sh, n),
        **experts_saved(spec, sh, n),
        "ffn.shared.gate": 0,
        "ffn.shared.up": 0,
        "ffn.shared.act": n * d_s * cb,
        "ffn.shared": 2 * n * d_s * cb,
        "ffn.shared.down": n * d_s * cb,
    }


@register("memory.buffers", CLASS)
def deepseek_v3_buffers(spec: ModelSpec, sh: Shapes) -> Any:
    """DeepseekV3RotaryEmbedding.__init__: ``inv_freq`` and its clone ``original_inv_freq``
    [d_rope / 2] (fp32, cast with the weights by model.to(dtype)); each MoE layer's
    DeepseekV3TopkRouter ``e_score_correction_bias`` [E] fp32 (_keep_in_fp32_modules_strict)."""
    moe_layers = spec.n_decoder_layers - len(spec.dense_layers) if spec.n_experts else 0
    rotary = 2 * nbytes(spec.qk_rope_head_dim // 2, buffer_dtype(sh))
    return rotary + moe_layers * spec.n_experts * FP32_BYTES


@register("unsupported", CLASS)
def unmeasured_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """The rules are measured in fp32 without checkpointing (a low dtype changes the fp32
    router's casts and the norms' copies), sdpa where the value head dim differs from q.k's
    (torch's math fallback on CPU), and the no-grad passes (estimator/rules/hf/
    deepseek_v3_pass.py) with transformers' own DynamicCache, in the model dtype, from a plain
    call or generate(): anything else is refused by name."""
    name = spec.hf_architecture
    if sh.cb != FP32_BYTES or sh.checkpointing != "none":
        return (
            f"dtype={sh.compute_dtype!r} with checkpointing={sh.checkpointing!r} is not "
            f"modelled for memory of {name} (measured: fp32, no checkpointing)"
        )
    if sh.attention_impl != "eager" and spec.v_head_dim == spec.head_dim:
        return (
            f"attention_impl={sh.attention_impl!r} with v_head_dim = qk head dim "
            f"({spec.head_dim}) is not modelled for memory of {name} (CPU flash, not the "
            "math fallback the rules describe)"
        )
    if sh.training:
        return None
    if sh.engine not in INFERENCE_ENGINES or not sh.kv_cache or sh.kv_dtype != sh.compute_dtype:
        return (
            f"engine={sh.engine!r} with kv_cache={sh.kv_cache} and kv_cache_dtype="
            f"{sh.kv_dtype!r} is not modelled for memory of {name} (measured: transformers' "
            f"latent DynamicCache in the model dtype, engines {'/'.join(INFERENCE_ENGINES)})"
        )
    return None


#: the serving engines (Workload.engine) whose no-grad passes were measured on the class
INFERENCE_ENGINES = ("forward", "hf-generate")
