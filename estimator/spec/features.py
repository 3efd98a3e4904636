"""The architecture features of issue 22 (Qwen, Gemma, Phi, Mixtral, DeepSeek, GPT-NeoX, Falcon,
OLMo 2, Gopher): their checks and derived defaults (``check_and_fill``, ModelSpec's last
validator) and the names of those a spec uses (``features``), which the estimator's rules
refuse by name where they do not model them (estimator/rules/features.py).

Mixture of experts (Shazeer et al. 2017; Fedus et al. 2022; Jiang et al. 2024, Mixtral): a
layer not in ``dense_layers`` replaces its FFN by ``n_experts`` gated FFNs of ``expert_d_ff``
and a router Linear(d, n_experts); each token runs ``n_experts_per_token`` of them (top-k) and
the shared MLP, if any. Multi-head latent attention (DeepSeek-V2, Liu et al. 2024, sec. 2.1):
k and v come from a latent of ``kv_lora_rank`` values (plus ``qk_rope_head_dim`` rotary key
values shared by the heads); q from a ``q_lora_rank`` bottleneck when given.
"""

from __future__ import annotations

from typing import Any

from estimator.spec.errors import SpecError

#: a ModelSpec (estimator/spec/model.py calls this module from its validator, so the type is
#: not imported here: no import circle)
ModelSpec = Any


def _fail(field: str, value: object, allowed: str) -> None:
    raise SpecError(f"{field}={value!r} is invalid: {allowed}")


def _set(spec: ModelSpec, field: str, value: object) -> None:
    object.__setattr__(spec, field, value)


def check_and_fill(spec: ModelSpec) -> ModelSpec:
    """Cross-field checks of the issue-22 fields; fill their defaults only when absent."""
    for field in ("qkv_bias", "o_bias", "ffn_bias"):
        if getattr(spec, field) is None:
            _set(spec, field, spec.bias)
    _check_moe(spec)
    _check_mla(spec)
    if spec.layer_pattern is not None:
        if spec.arch != "decoder" or len(spec.layer_pattern) != spec.n_decoder_layers:
            _fail(
                "layer_pattern",
                spec.layer_pattern,
                f"one entry per decoder layer ({spec.n_decoder_layers}) of a decoder-only model",
            )
        if "sliding" in spec.layer_pattern and spec.sliding_window is None:
            _fail("layer_pattern", "sliding", "sliding layers need sliding_window")
    if spec.rotary_dim is not None:
        if spec.position != "rotary":
            _fail("rotary_dim", spec.rotary_dim, "needs position='rotary'")
        if spec.rotary_dim % 2 or spec.rotary_dim > spec.head_dim:
            _fail("rotary_dim", spec.rotary_dim, f"an even number <= head_dim={spec.head_dim}")
    if spec.parallel_block != "none" and (
        spec.norm_position != "pre" or spec.sublayer_norm != "input"
    ):
        _fail(
            "parallel_block",
            spec.parallel_block,
            "parallel blocks norm each block's input (norm_position='pre', sublayer_norm='input')",
        )
    if spec.sublayer_norm != "input" and spec.norm_position != "pre":
        _fail("sublayer_norm", spec.sublayer_norm, "needs norm_position='pre'")
    if spec.fused_gate_up and not spec.gated:
        _fail("fused_gate_up", True, "needs a gated FFN (swiglu, geglu)")
    if spec.final_softcap is not None and not spec.lm_head:
        _fail("final_softcap", spec.final_softcap, "soft-caps the logits of an LM head")
    return spec


def _check_moe(spec: ModelSpec) -> None:
    if not spec.n_experts:
        for field, empty in (("n_experts_per_token", 0), ("n_shared_experts", 0),
                             ("router_fp32", False), ("router_scoring", "softmax"),
                             ("dense_layers", ()), ("shared_expert_gate", False),
                             ("expert_d_ff", None), ("shared_expert_d_ff", None)):  # fmt: skip
            if getattr(spec, field) != empty:
                _fail(field, getattr(spec, field), "only for a mixture of experts (n_experts > 0)")
        return
    if spec.arch != "decoder":
        _fail(
            "n_experts", spec.n_experts, "mixtures of experts are modelled in decoder-only models"
        )
    if not 1 <= spec.n_experts_per_token <= spec.n_experts:
        _fail("n_experts_per_token", spec.n_experts_per_token,
              f"between 1 and n_experts={spec.n_experts}")  # fmt: skip
    L = spec.n_decoder_layers
    if any(not 0 <= i < L for i in spec.dense_layers) or len(set(spec.dense_layers)) != len(
        spec.dense_layers
    ):
        _fail("dense_layers", spec.dense_layers, f"distinct layer indices in [0, {L})")
    if spec.expert_d_ff is None:
        _set(spec, "expert_d_ff", spec.d_ff)
    if spec.shared_expert_gate and not (spec.n_shared_experts or spec.shared_expert_d_ff):
        _fail("shared_expert_gate", True, "gates a shared expert (n_shared_experts > 0)")
    if spec.shared_expert_d_ff is not None and not spec.n_shared_experts:
        _fail("shared_expert_d_ff", spec.shared_expert_d_ff, "needs n_shared_experts > 0")
    if spec.n_shared_experts and spec.shared_expert_d_ff is None:
        _set(spec, "shared_expert_d_ff", spec.n_shared_experts * spec.expert_d_ff)


def _check_mla(spec: ModelSpec) -> None:
    mla = ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    if spec.kv_lora_rank is None:
        for field in ("q_lora_rank", *mla):
            if getattr(spec, field) is not None:
                _fail(field, getattr(spec, field), "only for latent attention (kv_lora_rank)")
        return
    for field in mla:
        if getattr(spec, field) is None:
            _fail(field, None, "latent attention (kv_lora_rank) needs it")
    if spec.n_kv_heads != spec.n_heads:
        _fail("n_kv_heads", spec.n_kv_heads, "latent attention decompresses k, v per head")
    if spec.head_dim != spec.qk_nope_head_dim + spec.qk_rope_head_dim:
        _fail("head_dim", spec.head_dim, "latent attention's q.k width: qk_nope_head_dim + "
              f"qk_rope_head_dim = {spec.qk_nope_head_dim + spec.qk_rope_head_dim}")  # fmt: skip
    if spec.fused_qkv or spec.position != "rotary":
        _fail("kv_lora_rank", spec.kv_lora_rank, "latent attention has rotary positions and "
              "no fused qkv")  # fmt: skip


# ---- derived quantities -------------------------------------------------------------------
def moe_layers(spec: ModelSpec) -> int:
    """Decoder layers whose FFN is a mixture of experts."""
    return spec.n_decoder_layers - len(spec.dense_layers) if spec.n_experts else 0


def attn_out_dim(spec: ModelSpec) -> int:
    """Width of the attention output o_proj reads: h * d_h (h * v_head_dim under MLA)."""
    return spec.n_heads * (spec.v_head_dim if spec.kv_lora_rank else spec.head_dim)


def features(spec: ModelSpec) -> list[str]:
    """The issue-22 features a spec uses, each as ``field=value`` (the name a refusal gives)."""
    out = []
    for field in ("qkv_bias", "o_bias", "ffn_bias"):
        if getattr(spec, field) != spec.bias:
            out.append(f"{field}={getattr(spec, field)!r} (with bias={spec.bias!r})")
    defaults = {"qk_norm": "none", "sublayer_norm": "input", "parallel_block": "none",
                "rotary_dim": None, "layer_pattern": None, "attn_softcap": None,
                "final_softcap": None, "embed_scale": False, "n_experts": 0,
                "kv_lora_rank": None, "fused_gate_up": False}  # fmt: skip
    for field, default in defaults.items():
        value = getattr(spec, field)
        if value != default and not (field == "rotary_dim" and value == spec.head_dim):
            shown = "(per layer)" if field == "layer_pattern" else repr(value)
            out.append(f"{field}={shown}")
    if spec.position == "xl_relative":
        out.append("position='xl_relative'")
    return out
