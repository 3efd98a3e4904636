"""Tiny Hugging Face config.json dicts of the issue-22 families whose memory the HF rules model
(estimator/rules/features.py MEASURED): random init, never the hub; the validation tests of
those classes run them (tests/tgauge/test_hf_rules_families.py)."""

from __future__ import annotations

from typing import Any

from tgauge.hf_tiny import D_FF, POSITIONS, D, H, L, V

CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": V,
              "hidden_size": D, "intermediate_size": D_FF, "num_hidden_layers": L,
              "num_attention_heads": H, "num_key_value_heads": 2,
              "max_position_embeddings": POSITIONS, "tie_word_embeddings": False,
              "use_sliding_window": False, "bos_token_id": 0, "eos_token_id": 0},
}  # fmt: skip
FAMILIES = tuple(CONFIGS)
