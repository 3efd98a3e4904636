"""The issue-22 features (estimator/spec/features.py ``features``) whose memory the reference
rules model, each measured exact against reference_model/ (tests/reference_model/
test_ref_parallel.py): rule ``unmodelled`` (estimator/rules/features.py) refuses the others."""

from __future__ import annotations

#: feature-name prefixes (``field=value``) the reference rules model
MODELLED: tuple[str, ...] = (
    "parallel_block",
    "qkv_bias",
    "o_bias",
    "ffn_bias",
    "embed_scale",
    "n_experts",  # issue 22e: rules/reference/moe.py (what it refuses of MoE: ``unsupported``)
    "kv_lora_rank",  # issue 22l: rules/reference/mla.py (what it refuses: ``unmodelled``)
)
