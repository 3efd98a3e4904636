"""Tiny Hugging Face config.json dicts of the seven families (random init, never the hub).

Each names its task class in ``architectures`` as a published config does. The HF section of
the validation matrix (tgauge/matrix.py) runs them; the estimator, profiler and validation
tests of the Hugging Face path (issue 9) share them through tests/hf_tiny.py.
"""

from __future__ import annotations

from typing import Any

L, D, H, D_FF, V, POSITIONS = 2, 64, 4, 128, 100, 64

CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": L,
             "n_embd": D, "n_head": H, "vocab_size": V, "n_positions": POSITIONS,
             "bos_token_id": 0, "eos_token_id": 0},
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": V,
              "hidden_size": D, "intermediate_size": D_FF, "num_hidden_layers": L,
              "num_attention_heads": H, "num_key_value_heads": 2,
              "max_position_embeddings": POSITIONS, "tie_word_embeddings": False,
              "bos_token_id": 0, "eos_token_id": 0},
    "mistral": {"model_type": "mistral", "architectures": ["MistralForCausalLM"],
                "vocab_size": V, "hidden_size": D, "intermediate_size": D_FF,
                "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": 2,
                "max_position_embeddings": POSITIONS, "sliding_window": 8,
                "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0},
    "bert": {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": V,
             "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H,
             "intermediate_size": D_FF, "max_position_embeddings": POSITIONS,
             "pad_token_id": 0},
    "t5": {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
           "vocab_size": V, "d_model": D, "d_kv": D // H, "d_ff": D_FF, "num_layers": L,
           "num_heads": H, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1},
    "bart": {"model_type": "bart", "architectures": ["BartForConditionalGeneration"],
             "vocab_size": V, "d_model": D, "encoder_layers": L, "decoder_layers": L,
             "encoder_attention_heads": H, "decoder_attention_heads": H,
             "encoder_ffn_dim": D_FF, "decoder_ffn_dim": D_FF,
             "max_position_embeddings": POSITIONS, "pad_token_id": 1, "bos_token_id": 0,
             "eos_token_id": 2, "decoder_start_token_id": 2, "forced_eos_token_id": 2},
    "vit": {"model_type": "vit", "architectures": ["ViTForImageClassification"],
            "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H,
            "intermediate_size": D_FF, "image_size": 32, "patch_size": 8, "num_channels": 3,
            "num_labels": 10},
}  # fmt: skip
FAMILIES = tuple(CONFIGS)
#: families whose class can generate (a decoder with a KV cache)
DECODERS = ("gpt2", "llama", "mistral", "t5", "bart")
