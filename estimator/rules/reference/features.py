"""The issue-22 features (estimator/spec/features.py ``features``) whose memory the reference
rules model, each measured exact against reference_model/ (tests/reference_model/
test_ref_parallel.py, test_ref_biases.py, test_ref_layer_pattern.py): rule ``unmodelled``
(estimator/rules/features.py) refuses the others, and ``unmodelled_runs`` the runs of a
modelled feature that were not measured."""

from __future__ import annotations

from typing import Any

from estimator.spec.features import features

#: issue 22p: per-layer patterns, QK-norm per head, sandwich norms, soft-caps, partial rotary
GEMMA_QWEN: tuple[str, ...] = ("layer_pattern", "qk_norm='head'", "sublayer_norm='sandwich'",
                               "attn_softcap", "final_softcap", "rotary_dim")  # fmt: skip
#: feature-name prefixes (``field=value``) the reference rules model
MODELLED: tuple[str, ...] = (
    "parallel_block",
    "qkv_bias",
    "o_bias",
    "ffn_bias",
    "embed_scale",
    "n_experts",  # issue 22e: rules/reference/moe.py (what it refuses of MoE: ``unsupported``)
    "kv_lora_rank",  # issue 22l: rules/reference/mla.py (what it refuses: ``unmodelled``)
    *GEMMA_QWEN,
)


def unmodelled_runs(spec: Any, sh: Any) -> str | None:
    """What of a modelled feature's run the reference rules do not model (one phrase), else
    None. issue 22p: each of GEMMA_QWEN was measured in full training (no LoRA, no frozen
    layers); QK-norm, sandwich norms and soft-caps in one dtype (no autocast), sandwich norms
    without dropout; a per-layer pattern walks its layers one by one with their own caches,
    measured with the engines that grow the cache by torch.cat, without experts."""
    if spec.qk_norm != "none" and (sh.autocast or spec.arch != "decoder"):
        return (
            f"qk_norm={spec.qk_norm!r} under autocast or in cross-attention (measured: "
            "decoder-only, one dtype)"
        )
    if spec.sublayer_norm == "sandwich" and (sh.autocast or sh.dropout or spec.arch != "decoder"):
        return (
            "sublayer_norm='sandwich' under autocast, with dropout or in cross-attention "
            "(measured: decoder-only, one dtype, no dropout)"
        )
    ours = [f for f in features(spec) if f.startswith(GEMMA_QWEN)]
    if ours and spec.kv_lora_rank:  # each measured on multi-head attention
        return f"{', '.join(ours)} with latent attention (measured: multi-head attention)"
    if ours and spec.n_experts:  # each measured on dense layers
        return f"{', '.join(ours)} with a mixture of experts (measured: dense layers)"
    if ours and sh.finetune.kind != "full":
        return f"{', '.join(ours)} with finetune={sh.finetune.kind!r} (measured: full training)"
    if spec.attn_softcap is not None and sh.attention_impl != "eager":
        return (
            f"attn_softcap={spec.attn_softcap} with attention_impl={sh.attention_impl!r} "
            "(scaled_dot_product_attention has no soft-capping; the reference model runs it eager)"
        )
    if (spec.attn_softcap or spec.final_softcap) and sh.autocast:
        return "attn_softcap / final_softcap under autocast (measured: one dtype)"
    if spec.layer_pattern is None:
        return None
    if sh.engine == "vllm":
        return "layer_pattern (per layer) with engine='vllm' (paged blocks per layer kind)"
    return None
