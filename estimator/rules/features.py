"""What the memory rules do not model of the issue-22 features (estimator/spec/features.py):
rule ``unmodelled`` answers one line naming them, else None; estimator.estimate.check_supported
raises UnsupportedError with it before any memory term runs.

The parameters (estimator.terms.params), FLOPs (estimator.terms.flops) and KV cache
(estimator.terms.kv_cache) of these features are modelled; the saved activations, what the
step's timeline holds and the peaks are modelled only where a class's rules were measured
against its code (``MEASURED``, tests/tgauge/test_hf_rules_families.py), so every other spec
using them is refused by name rather than estimated with rules that do not describe its code.
"""

from __future__ import annotations

from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.features import features
from estimator.spec.hf_families import DEFAULT_ARCHITECTURE
from estimator.spec.model import ModelSpec

#: transformers classes of the issue-22 families whose memory the HF rules model, with the
#: spec features measured for them (outside autocast): the Llama rules where the code is
#: Llama's (modeling_qwen2.Qwen2Attention differs only by q/k/v biases, which add no saved
#: tensor: F.linear's addmm saves its input and weight either way)
MEASURED: dict[str, tuple[str, ...]] = {
    "Qwen2ForCausalLM": ("qkv_bias", "o_bias", "ffn_bias"),
    # modeling_phi3: Llama's code but one qkv_proj (the fused_qkv views, as GPT-2's c_attn),
    # one gate_up_proj (estimator/rules/hf/phi3.py) and partial rotary (its cos, sin)
    "Phi3ForCausalLM": ("fused_gate_up", "rotary_dim"),
    # issue 22d: modeling_qwen3 is Llama's code plus q_norm / k_norm (estimator/rules/hf/qwen3.py)
    "Qwen3ForCausalLM": ("qk_norm",),
    # issue 22d: modeling_gpt_neox, parallel blocks and partial rotary (rules/hf/gpt_neox.py)
    "GPTNeoXForCausalLM": ("parallel_block", "rotary_dim"),
    # issue 22d: modeling_gemma2, sandwich norms, soft-caps, embedding scale, sliding / full
    # layers (eager: every layer's scores are [s, s_k] with its own mask; rules/hf/gemma2.py)
    "Gemma2ForCausalLM": (
        "sublayer_norm",
        "layer_pattern",
        "attn_softcap",
        "final_softcap",
        "embed_scale",
    ),
    # issue 22: modeling_mixtral, Llama's attention and a MoE block run by grouped_mm
    # (estimator/rules/hf/moe.py)
    "MixtralForCausalLM": ("n_experts",),
    # issue 22v: modeling_deepseek_v3, latent attention and its MoE block run by grouped_mm
    # (estimator/rules/hf/deepseek_v3.py; issue 22s: its no-grad passes, deepseek_v3_pass.py)
    "DeepseekV3ForCausalLM": ("n_experts", "kv_lora_rank", "q_lora_rank"),
}
#: classes measured only in some runs: class -> (modes, attention implementations)
MEASURED_RUNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # issue 22d: Phi3ForCausalLM's sdpa and its no-grad passes are measured (rules/hf/phi3.py);
    # Gemma 2 runs eager only (rules/hf/gemma2.py); issue 22g: its no-grad passes too
    # (Gemma2Pass: the sandwich and Gemma2RMSNorm transients, soft-caps, per-layer caches)
    "Gemma2ForCausalLM": (("train", "prefill", "decode"), ("eager",)),
    # issue 22v: DeepSeek-V3 in training; issue 22s: its no-grad passes too (DeepseekV3Pass:
    # the latent cache, expand_kv's per-step k and v, the router's and experts' transients);
    # the inference runs not measured (vLLM, no cache, another cache dtype) are refused by
    # rules/hf/deepseek_v3.py
    "DeepseekV3ForCausalLM": (("train", "prefill", "decode"), ("eager", "fused")),
}
#: the MoE experts code whose memory the rules model (Workload.experts_impl)
MEASURED_EXPERTS = ("grouped_mm",)
_NEW_CLASSES = frozenset(DEFAULT_ARCHITECTURE.values())


def _line(spec: ModelSpec, what: str) -> str:
    return (
        f"{what} is not modelled for memory (saved activations, peaks) of {spec.name}; its "
        "parameters, FLOPs and KV cache are (estimator.terms.params / flops / kv_cache)"
    )


@register("unmodelled", "reference")
def reference_unmodelled(spec: ModelSpec, sh: Shapes) -> str | None:
    """The issue-22 features the reference rules model are listed in
    estimator/rules/reference/features.py (``MODELLED``); each other one in use is named
    (reference_model/ refuses those it does not build by name too)."""
    from estimator.rules.reference.features import MODELLED, unmodelled_runs

    found = [f for f in features(spec) if not f.startswith(MODELLED)]
    if not found and (run := unmodelled_runs(spec, sh)):  # issue 22p
        return _line(spec, run)
    if not found and spec.kv_lora_rank:  # issue 22l: what the latent-attention rules model
        return rule("unmodelled.latent_attention", spec, sh)(spec, sh)
    return _line(spec, ", ".join(found)) if found else None


@register("unmodelled", "hf")
def hf_unmodelled(spec: ModelSpec, sh: Shapes) -> str | None:
    """A class of the issue-22 families is modelled where MEASURED lists it, for the features
    listed there and without autocast; every other feature in use is named."""
    measured = MEASURED.get(spec.hf_architecture or "")
    if spec.hf_architecture in _NEW_CLASSES and measured is None:
        return _line(spec, f"the code of {spec.hf_architecture} (transformers)")
    if spec.hf_architecture in _NEW_CLASSES and sh.autocast:  # measured in fp32 only
        return _line(spec, f"autocast on {spec.hf_architecture}")
    if spec.n_experts and sh.experts_impl not in MEASURED_EXPERTS:  # issue 22
        return _line(spec, f"experts_impl={sh.experts_impl!r} (measured: "
                     f"{'/'.join(MEASURED_EXPERTS)})")  # fmt: skip
    if spec.n_experts and sh.finetune.kind != "full":  # measured: full training only
        return _line(spec, f"finetune={sh.finetune.kind!r} on a mixture of experts")
    if spec.n_experts and (sh.checkpointing != "none" or sh.dropout > 0):  # measured off
        return _line(spec, f"checkpointing={sh.checkpointing!r} / dropout={sh.dropout} on a "
                     "mixture of experts (measured: none / 0.0)")  # fmt: skip
    runs = MEASURED_RUNS.get(spec.hf_architecture or "")
    if runs is not None and (sh.mode not in runs[0] or sh.attention_impl not in runs[1]):
        return _line(spec, f"mode={sh.mode!r} with attention_impl={sh.attention_impl!r} on "
                     f"{spec.hf_architecture} (measured: {'/'.join(runs[0])}, "
                     f"{'/'.join(runs[1])})")  # fmt: skip
    allowed = () if sh.autocast else (measured or ())
    found = [f for f in features(spec) if not f.startswith(allowed)] if allowed else features(spec)
    if found:
        return _line(spec, ", ".join(found) + (" under autocast" if sh.autocast else ""))
    return None
