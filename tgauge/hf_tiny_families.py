"""Tiny Hugging Face config.json dicts of the issue-22 families whose memory the HF rules model
(estimator/rules/features.py MEASURED): random init, never the hub; the validation tests of
those classes run them (tests/tgauge/test_hf_rules_families.py)."""

from __future__ import annotations

from typing import Any

from tgauge.hf_tiny import D_FF, POSITIONS, D, H, L, V

_LLAMA_LIKE = {"vocab_size": V, "hidden_size": D, "intermediate_size": D_FF,
               "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": 2,
               "max_position_embeddings": POSITIONS, "bos_token_id": 0, "eos_token_id": 0,
               "pad_token_id": 0}  # fmt: skip
CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": V,
              "hidden_size": D, "intermediate_size": D_FF, "num_hidden_layers": L,
              "num_attention_heads": H, "num_key_value_heads": 2,
              "max_position_embeddings": POSITIONS, "tie_word_embeddings": False,
              "use_sliding_window": False, "bos_token_id": 0, "eos_token_id": 0},
    "phi3": {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "vocab_size": V,
             "hidden_size": D, "intermediate_size": D_FF, "num_hidden_layers": L,
             "num_attention_heads": H, "num_key_value_heads": 2,
             "max_position_embeddings": POSITIONS, "partial_rotary_factor": 0.5,
             "sliding_window": 8, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0},
    # issue 22d: QK-norm (head_dim 8 != d / h, so q_proj is not square)
    "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": V,
              "hidden_size": D, "intermediate_size": D_FF, "num_hidden_layers": L,
              "num_attention_heads": H, "num_key_value_heads": 2, "head_dim": 8,
              "max_position_embeddings": POSITIONS, "tie_word_embeddings": False,
              "bos_token_id": 0, "eos_token_id": 0},
    # issue 22d: parallel attention + MLP, fused interleaved query_key_value, partial rotary,
    # LayerNorm with bias, gelu
    "gpt_neox": {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
                 "vocab_size": V, "hidden_size": D, "intermediate_size": D_FF,
                 "num_hidden_layers": L, "num_attention_heads": H,
                 "max_position_embeddings": POSITIONS, "rotary_pct": 0.25,
                 "bos_token_id": 0, "eos_token_id": 0},
    # issue 22d: sandwich norms, soft-caps, embedding scale, sliding / full layers
    "gemma2": {**_LLAMA_LIKE, "model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
               "num_hidden_layers": 3, "head_dim": 16, "sliding_window": 8},
}  # fmt: skip
FAMILIES = tuple(CONFIGS)

#: every issue-22 family (parameters and FLOPs checked against the real classes; memory
#: only for CONFIGS): small widths with each family's features switched on
EVERY: dict[str, dict[str, Any]] = {
    **CONFIGS,
    "qwen3": {**_LLAMA_LIKE, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
              "head_dim": 8},
    "qwen2_moe": {**_LLAMA_LIKE, "model_type": "qwen2_moe",
                  "architectures": ["Qwen2MoeForCausalLM"], "num_hidden_layers": 3,
                  "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]},
    "qwen3_moe": {**_LLAMA_LIKE, "model_type": "qwen3_moe",
                  "architectures": ["Qwen3MoeForCausalLM"], "head_dim": 16, "num_experts": 4,
                  "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    "mixtral": {**_LLAMA_LIKE, "model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
                "num_local_experts": 4, "num_experts_per_tok": 2},
    "gemma2": {**_LLAMA_LIKE, "model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
               "num_hidden_layers": 3, "head_dim": 16, "sliding_window": 8},
    "gemma3_text": {**_LLAMA_LIKE, "model_type": "gemma3_text",
                    "architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 3,
                    "head_dim": 16, "sliding_window": 8, "sliding_window_pattern": 2},
    "deepseek_v3": {**_LLAMA_LIKE, "model_type": "deepseek_v3",
                    "architectures": ["DeepseekV3ForCausalLM"], "num_hidden_layers": 3,
                    "num_key_value_heads": H, "moe_intermediate_size": 32,
                    "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
                    "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1,
                    "kv_lora_rank": 16, "q_lora_rank": 24, "qk_rope_head_dim": 8,
                    "qk_nope_head_dim": 16, "v_head_dim": 12},
    "gpt_neox": {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
                 "vocab_size": V, "hidden_size": D, "intermediate_size": D_FF,
                 "num_hidden_layers": L, "num_attention_heads": H,
                 "max_position_embeddings": POSITIONS, "rotary_pct": 0.25,
                 "bos_token_id": 0, "eos_token_id": 0},
    "falcon": {"model_type": "falcon", "architectures": ["FalconForCausalLM"],
               "vocab_size": V, "hidden_size": D, "num_hidden_layers": L,
               "num_attention_heads": H, "max_position_embeddings": POSITIONS,
               "bos_token_id": 0, "eos_token_id": 0},
    "falcon_new": {"model_type": "falcon", "architectures": ["FalconForCausalLM"],
                   "vocab_size": V, "hidden_size": D, "num_hidden_layers": L,
                   "num_attention_heads": H, "num_kv_heads": 2,
                   "new_decoder_architecture": True, "max_position_embeddings": POSITIONS,
                   "bos_token_id": 0, "eos_token_id": 0},
    "olmo2": {**_LLAMA_LIKE, "model_type": "olmo2", "architectures": ["Olmo2ForCausalLM"]},
}  # fmt: skip

# issue 22: the mixture of experts whose memory the rules model (estimator/rules/hf/moe.py)
CONFIGS["mixtral"] = EVERY["mixtral"]
FAMILIES = tuple(CONFIGS)
# issue 22v: latent attention and DeepSeek's MoE block (estimator/rules/hf/deepseek_v3.py)
CONFIGS["deepseek_v3"] = EVERY["deepseek_v3"]
FAMILIES = tuple(CONFIGS)
