"""The Hugging Face config.json of each preset that has a transformers twin.

``--impl hf`` on a preset reads this dict as a config.json (ModelSpec.from_hf_config): same
sizes as the preset, ``implementation="hf"``, and the class ``architectures`` names is what
`tgauge validate` and `tgauge profile` build (random init). Each dict holds the published
config's fields that tgauge reads (no download); tests/estimator/spec/test_hf_twins.py checks that
the spec equals the preset field by field and that the transformers class built from the dict
(meta device) has the preset's parameter count.
"""

from __future__ import annotations

import copy
from typing import Any

from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.presets import PRESETS, PUBLISHED
from estimator.spec.published import CONFIGS as PUBLISHED_CONFIGS

Config = dict[str, Any]


def _gpt2(n_layer: int, d: int, h: int) -> Config:
    # openai-community/gpt2{,-medium,-large,-xl}/config.json
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": n_layer,
            "n_embd": d, "n_head": h, "vocab_size": 50257, "n_positions": 1024,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "bos_token_id": 50256, "eos_token_id": 50256}  # fmt: skip


def _bert(n_layer: int, d: int, h: int) -> Config:
    # google-bert/bert-{base,large}-uncased/config.json, as BertModel (the pooler, no MLM
    # head): the preset describes the encoder, not a task head
    return {"model_type": "bert", "architectures": ["BertModel"], "num_hidden_layers": n_layer,
            "hidden_size": d, "num_attention_heads": h, "intermediate_size": 4 * d,
            "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}  # fmt: skip


def _t5(n_layer: int, d: int, h: int, d_ff: int) -> Config:
    # google-t5/t5-{small,base}/config.json (v1.0: ReLU, tied)
    return {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
            "num_layers": n_layer, "d_model": d, "num_heads": h, "d_kv": 64, "d_ff": d_ff,
            "vocab_size": 32128, "n_positions": 512, "feed_forward_proj": "relu",
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "layer_norm_epsilon": 1e-6, "decoder_start_token_id": 0, "pad_token_id": 0,
            "eos_token_id": 1}  # fmt: skip


def _llama(architecture: str, vocab: int, h_kv: int, d_ff: int, max_seq: int, theta: float,
           window: int | None = None) -> Config:  # fmt: skip
    # meta-llama/Llama-2-7b-hf, meta-llama/Meta-Llama-3-8B, mistralai/Mistral-7B-v0.1 config.json
    model_type = "mistral" if architecture.startswith("Mistral") else "llama"
    cfg = {"model_type": model_type, "architectures": [architecture], "num_hidden_layers": 32,
           "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": h_kv,
           "intermediate_size": d_ff, "vocab_size": vocab, "max_position_embeddings": max_seq,
           "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": theta,
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
    if window is not None:
        cfg["sliding_window"] = window
    return cfg


#: preset name -> its twin's config.json (the presets without one: transformer-base / -big,
#: Vaswani et al.'s model, which transformers has no class for; gpt-3-175b, gopher-280b and
#: chinchilla-70b, papers' models without a published config.json)
HF_TWINS: dict[str, Config] = {
    "bert-base": _bert(12, 768, 12),
    "bert-large": _bert(24, 1024, 16),
    "gpt2-small": _gpt2(12, 768, 12),
    "gpt2-medium": _gpt2(24, 1024, 16),
    "gpt2-large": _gpt2(36, 1280, 20),
    "gpt2-xl": _gpt2(48, 1600, 25),
    "t5-small": _t5(6, 512, 8, 2048),
    "t5-base": _t5(12, 768, 12, 3072),
    # facebook/bart-base/config.json
    "bart-base": {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        "d_model": 768,
        "encoder_layers": 6,
        "decoder_layers": 6,
        "encoder_attention_heads": 12,
        "decoder_attention_heads": 12,
        "encoder_ffn_dim": 3072,
        "decoder_ffn_dim": 3072,
        "vocab_size": 50265,
        "max_position_embeddings": 1024,
        "activation_function": "gelu",
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
    },  # fmt: skip
    # google/vit-base-patch16-224/config.json, as ViTModel (with pooler)
    "vit-b-16": {
        "model_type": "vit",
        "architectures": ["ViTModel"],
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "image_size": 224,
        "patch_size": 16,
        "num_channels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "qkv_bias": True,
    },  # fmt: skip
    "llama-2-7b": _llama("LlamaForCausalLM", 32000, 32, 11008, 4096, 10000.0),
    "llama-3-8b": _llama("LlamaForCausalLM", 128256, 8, 14336, 8192, 500000.0),
    "mistral-7b": _llama("MistralForCausalLM", 32000, 8, 14336, 32768, 10000.0, window=4096),
    # issue 22: the presets read from their published config.json (estimator/spec/published.py)
    **{name: PUBLISHED_CONFIGS[name] for name in PUBLISHED},
}


def _canonical(name: str) -> str:
    """The preset's own spelling of ``name`` (case-insensitive); SpecError when unknown."""
    found = next((p for p in PRESETS if p.lower() == name.lower()), None)
    if found is None:
        raise SpecError(f"preset={name!r} is unknown; presets: {', '.join(PRESETS)}")
    return found


def hf_twin_config(name: str) -> Config:
    """A copy of preset ``name``'s twin config.json; SpecError naming the presets that have
    one when it has none."""
    preset = _canonical(name)
    if preset not in HF_TWINS:
        raise SpecError(
            f"preset={preset!r} has no Hugging Face twin, so --impl hf cannot apply; presets "
            f"with one: {', '.join(HF_TWINS)}"
        )
    return copy.deepcopy(HF_TWINS[preset])


def hf_twin_spec(name: str) -> ModelSpec:
    """The spec of preset ``name``'s twin: its sizes, ``implementation="hf"``, named as the
    preset."""
    spec = ModelSpec.from_hf_config(hf_twin_config(name))
    preset = _canonical(name)  # the preset's usual settings, not the bare config's
    return spec.model_copy(update={"name": preset, "usual": PRESETS[preset].usual})
