"""Published architectures as ModelSpecs.

Each preset follows the published hyperparameters of the paper or of the Hugging Face class
named in its comment; tests/estimator/spec/test_presets_hf.py checks the parameter count of every
preset against its Hugging Face twin (built on the meta device) to the exact integer.
"""

from __future__ import annotations

from typing import Any

from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.usual import UsualSettings, usual_fields
from estimator.spec.workload import Workload


def _transformer(name: str, d: int, h: int, d_ff: int) -> ModelSpec:
    # Vaswani et al. 2017, "Attention Is All You Need", Table 3: N=6 layers per stack, shared
    # source-target BPE vocabulary of 37000 tokens, embeddings tied with the pre-softmax
    # linear, post-norm residuals (LayerNorm(x + Sublayer(x))), ReLU FFN, sinusoidal positions.
    # The paper reports 65M (base) and 213M (big) parameters; our exact count is 63,082,496
    # (63.1M) and 214,245,376 (214.2M). The paper does not say how it counted (its totals are
    # rounded, and its En-Fr models use a 32000 word-piece vocabulary), so the gap of about 2%
    # and 0.6% is left as is rather than tuned away.
    return ModelSpec(
        name=name,
        arch="encoder-decoder",
        n_encoder_layers=6,
        n_decoder_layers=6,
        d_model=d,
        n_heads=h,
        d_ff=d_ff,
        vocab_size=37000,
        max_seq_len=1024,  # sinusoidal: not a limit of the model, only a default
        activation="relu",
        norm="layernorm",
        norm_position="post",
        norm_eps=1e-6,
        bias=True,
        tie_embeddings=True,
        final_norm=False,
        position="sinusoidal",
    )


def _bert(name: str, n_layers: int, d: int, h: int) -> ModelSpec:
    # BertModel (transformers) incl. the pooler: bert-base-uncased / bert-large-uncased configs.
    return ModelSpec(
        name=name,
        arch="encoder",
        n_encoder_layers=n_layers,
        d_model=d,
        n_heads=h,
        d_ff=4 * d,
        vocab_size=30522,
        max_seq_len=512,
        activation="gelu",
        norm="layernorm",
        norm_position="post",
        norm_eps=1e-12,
        final_norm=False,
        embed_norm=True,
        n_token_types=2,
        pooler=True,
        lm_head=False,
        position="learned",
    )


def _gpt2(name: str, n_layers: int, d: int, h: int) -> ModelSpec:
    # GPT2LMHeadModel (transformers), openai-community/gpt2{,-medium,-large,-xl} configs.
    return ModelSpec(
        name=name,
        arch="decoder",
        n_decoder_layers=n_layers,
        d_model=d,
        n_heads=h,
        d_ff=4 * d,
        vocab_size=50257,
        max_seq_len=1024,
        activation="gelu",
        norm="layernorm",
        norm_position="pre",
        norm_eps=1e-5,
        tie_embeddings=True,
        final_norm=True,
        position="learned",
    )


def _t5(name: str, n_layers: int, d: int, h: int, d_ff: int) -> ModelSpec:
    # T5ForConditionalGeneration (transformers), google-t5/t5-small and t5-base (v1.0) configs:
    # tied embeddings, RMS-style T5LayerNorm, ReLU, one relative-position bias per stack.
    return ModelSpec(
        name=name,
        arch="encoder-decoder",
        n_encoder_layers=n_layers,
        n_decoder_layers=n_layers,
        d_model=d,
        n_heads=h,
        head_dim=64,
        d_ff=d_ff,
        vocab_size=32128,
        max_seq_len=512,
        activation="relu",
        norm="rmsnorm",
        norm_position="pre",
        norm_eps=1e-6,
        bias=False,
        tie_embeddings=True,
        final_norm=True,
        position="relative",
        relative_buckets=32,
        relative_max_distance=128,
    )


def _llama(name: str, vocab: int, h_kv: int, d_ff: int, max_seq: int, theta: float,
           window: int | None = None) -> ModelSpec:  # fmt: skip
    # LlamaForCausalLM / MistralForCausalLM (transformers): RMSNorm, SwiGLU, rotary, untied.
    return ModelSpec(
        name=name,
        arch="decoder",
        n_decoder_layers=32,
        d_model=4096,
        n_heads=32,
        n_kv_heads=h_kv,
        d_ff=d_ff,
        vocab_size=vocab,
        max_seq_len=max_seq,
        activation="swiglu",
        norm="rmsnorm",
        norm_position="pre",
        norm_eps=1e-5,
        bias=False,
        tie_embeddings=False,
        final_norm=True,
        position="rotary",
        rope_theta=theta,
        sliding_window=window,
    )


PRESETS: dict[str, ModelSpec] = {
    "transformer-base": _transformer("transformer-base", 512, 8, 2048),
    "transformer-big": _transformer("transformer-big", 1024, 16, 4096),
    "bert-base": _bert("bert-base", 12, 768, 12),
    "bert-large": _bert("bert-large", 24, 1024, 16),
    "gpt2-small": _gpt2("gpt2-small", 12, 768, 12),
    "gpt2-medium": _gpt2("gpt2-medium", 24, 1024, 16),
    "gpt2-large": _gpt2("gpt2-large", 36, 1280, 20),
    "gpt2-xl": _gpt2("gpt2-xl", 48, 1600, 25),
    "t5-small": _t5("t5-small", 6, 512, 8, 2048),
    "t5-base": _t5("t5-base", 12, 768, 12, 3072),
    # BartForConditionalGeneration (transformers), facebook/bart-base config: learned positions
    # with 2 extra rows per stack, LayerNorm after the embeddings, post-norm, GELU, tied.
    "bart-base": ModelSpec(
        name="bart-base",
        arch="encoder-decoder",
        n_encoder_layers=6,
        n_decoder_layers=6,
        d_model=768,
        n_heads=12,
        d_ff=3072,
        vocab_size=50265,
        max_seq_len=1024,
        activation="gelu",
        norm="layernorm",
        norm_position="post",
        norm_eps=1e-5,
        tie_embeddings=True,
        final_norm=False,
        embed_norm=True,
        position="learned",
        position_offset=2,
    ),
    # ViTModel with pooler (transformers), google/vit-base-patch16-224 config: 224/16 -> 196
    # patches + class token, learned position table [1, 197, d], LayerNorm eps 1e-12.
    "vit-b-16": ModelSpec(
        name="vit-b-16",
        arch="encoder",
        n_encoder_layers=12,
        d_model=768,
        n_heads=12,
        d_ff=3072,
        max_seq_len=197,
        activation="gelu",
        norm="layernorm",
        norm_position="pre",
        norm_eps=1e-12,
        final_norm=True,
        pooler=True,
        lm_head=False,
        position="learned",
        image_size=224,
        patch_size=16,
        n_channels=3,
    ),
    # meta-llama/Llama-2-7b-hf: MHA, rope_theta 1e4, 4096 context.
    "llama-2-7b": _llama("llama-2-7b", 32000, 32, 11008, 4096, 10000.0),
    # meta-llama/Meta-Llama-3-8B: GQA 32/8, rope_theta 5e5, 8192 context, 128256 vocab.
    "llama-3-8b": _llama("llama-3-8b", 128256, 8, 14336, 8192, 500000.0),
    # mistralai/Mistral-7B-v0.1: GQA 32/8, sliding window 4096, 32768 positions.
    "mistral-7b": _llama("mistral-7b", 32000, 8, 14336, 32768, 10000.0, window=4096),
}


# issue 22: presets from published config.json files (estimator/spec/published.py, each with
# its address) and from papers
def _published(name: str) -> ModelSpec:
    """Preset ``name`` from its published config.json, as our reference model's spec (the
    twin, estimator/spec/hf_twins.py, is the same config as the transformers class)."""
    from estimator.spec.published import CONFIGS

    spec = ModelSpec.from_hf_config(CONFIGS[name])
    which = {"implementation": "reference", "hf_architecture": None, "activation_fn": None}
    return spec.model_copy(
        update={"name": name, **which, "fused_qkv": False, "fused_gate_up": False}
    )


def _gpt3_175b() -> ModelSpec:
    # Brown et al. 2020, Table 2.1: n_layers 96, d_model 12288, 96 heads of 128, context 2048;
    # GPT-2's architecture (learned positions, pre-LayerNorm, biases, GELU, tied embeddings,
    # vocabulary 50257); the alternating locally banded sparse attention changes no parameter
    # and is not modelled (every layer dense here).
    return ModelSpec(name="gpt-3-175b", arch="decoder", n_decoder_layers=96, d_model=12288,
                     n_heads=96, d_ff=4 * 12288, vocab_size=50257, max_seq_len=2048,
                     activation="gelu", norm="layernorm", bias=True, tie_embeddings=True,
                     position="learned")  # fmt: skip


def _deepmind(name: str, d: int, h: int) -> ModelSpec:
    # Rae et al. 2021 (Gopher), Table 1 and sec. 3: 80 layers, key/value size 128, d_ff = 4 d,
    # RMSNorm, relative positional encodings of Transformer-XL (Dai et al. 2019), SentencePiece
    # vocabulary of 32,000; Chinchilla (Hoffmann et al. 2022, Table 4) the same architecture.
    # The papers do not say whether the input and output embeddings are tied: tied here (an
    # untied head adds V * d, 0.19% / 0.37% of the totals). No biases.
    return ModelSpec(name=name, arch="decoder", n_decoder_layers=80, d_model=d, n_heads=h,
                     head_dim=128, d_ff=4 * d, vocab_size=32000, max_seq_len=2048,
                     activation="gelu", norm="rmsnorm", bias=False, tie_embeddings=True,
                     position="xl_relative")  # fmt: skip


PUBLISHED = ("llama-2-13b", "llama-2-70b", "llama-3-70b", "llama-3.1-8b", "llama-3.1-70b",
             "llama-3.1-405b", "mixtral-8x7b", "mixtral-8x22b", "qwen2.5-7b", "qwen2.5-72b",
             "qwen3-8b", "qwen3-30b-a3b", "gemma-2-9b", "gemma-2-27b", "phi-3-mini",
             "deepseek-v3", "falcon-7b", "gpt-neox-20b")  # fmt: skip
PRESETS.update({name: _published(name) for name in PUBLISHED})
PRESETS["gpt-3-175b"] = _gpt3_175b()
PRESETS["gopher-280b"] = _deepmind("gopher-280b", 16384, 128)
PRESETS["chinchilla-70b"] = _deepmind("chinchilla-70b", 8192, 64)


def get_preset(name: str) -> ModelSpec:
    """The preset called ``name`` (case-insensitive); SpecError listing the valid names."""
    spec = PRESETS.get(name) or PRESETS.get(name.lower())
    if spec is None:
        raise SpecError(f"preset={name!r} is unknown; presets: {', '.join(PRESETS)}")
    return spec


#: How a preset is usually run (estimator/spec/usual.py): each preset's ModelSpec carries its
#: own as ``usual``, and estimate() fills the workload fields a user left out from it.
PresetDefaults = UsualSettings


# Dropout in training, as each model was trained: Vaswani et al. 2017, sec. 5.4 and Table 3
# (P_drop 0.1 base, 0.3 big EN-DE); the transformers config classes of the twins
# (estimator/spec/usual.py DROPOUT_DEFAULTS: gpt2, bert, t5 0.1; vit 0.0; bart's sites
# differ: 0.1 residual, 0.0 attention and activation, not one probability, so 0).
_DROPOUT = {
    "transformer-base": 0.1,
    "transformer-big": 0.3,
    **{name: 0.1 for name in ("bert-base", "bert-large", "t5-small", "t5-base")},
    **{name: 0.1 for name in ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")},
}


def _small(name: str) -> UsualSettings:
    p = _DROPOUT.get(name, 0.0)
    why = "Vaswani et al. 2017" if name.startswith("transformer") else "its config class"
    # fp32: the dtype of the published checkpoints; eager: the attention tgauge's CPU
    # validation measures (T5's relative bias has no fused kernel in transformers)
    return UsualSettings(
        dropout=p, source=f"fp32 checkpoints, eager attention, dropout {p:g} ({why})"
    )


# Llama / Mistral: inference in the checkpoint's torch_dtype (Hugging Face config.json);
# fused attention as transformers (attn_implementation="sdpa", its default) and vLLM
# (FlashAttention) run them; training in bf16 with an fp32 master copy (mixed precision as
# Megatron-LM and DeepSpeed run it).
_LLM_TRAIN = {"train_dtype": "bf16", "train_master_weights": True, "attention_impl": "fused"}
PRESET_DEFAULTS: dict[str, PresetDefaults] = {
    **{name: _small(name) for name in PRESETS},
    "llama-2-7b": PresetDefaults(
        dtype="fp16",
        source="meta-llama/Llama-2-7b-hf config.json: torch_dtype float16",
        **_LLM_TRAIN,
    ),
    "llama-3-8b": PresetDefaults(
        dtype="bf16",
        source="meta-llama/Meta-Llama-3-8B config.json: torch_dtype bfloat16",
        **_LLM_TRAIN,
    ),
    "mistral-7b": PresetDefaults(
        dtype="bf16",
        source="mistralai/Mistral-7B-v0.1 config.json: torch_dtype bfloat16",
        **_LLM_TRAIN,
    ),
}
# issue 22: the published presets run in their config.json's torch_dtype; the papers' models
# (no checkpoint published) in bf16, the dtype Gopher and Chinchilla were trained in (Rae et
# al. 2021, sec. C.2)
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def _published_defaults(name: str) -> PresetDefaults:
    from estimator.spec.published import CONFIGS, SOURCES

    torch_dtype = CONFIGS[name].get("torch_dtype", "bfloat16")
    return PresetDefaults(dtype=_TORCH_DTYPES[torch_dtype],
                          source=f"{SOURCES[name]}: torch_dtype {torch_dtype}",
                          **_LLM_TRAIN)  # fmt: skip


PRESET_DEFAULTS.update({name: _published_defaults(name) for name in PUBLISHED})
for _name in ("gpt-3-175b", "gopher-280b", "chinchilla-70b"):
    PRESET_DEFAULTS[_name] = PresetDefaults(
        dtype="bf16", source="no checkpoint published: bf16, as Gopher was trained", **_LLM_TRAIN
    )


def preset_workload_defaults(name: str, mode: str, given: set[str]) -> dict[str, Any]:
    """Workload fields from PRESET_DEFAULTS[name] for the fields not in ``given`` (the ones
    the user set), keeping only those that differ from the Workload's own defaults."""
    d = PRESET_DEFAULTS.get(name) or PRESET_DEFAULTS.get(name.lower())
    if d is None:
        return {}
    base = Workload().model_dump()
    return {k: v for k, v in usual_fields(d, mode, given).items() if v != base[k]}


# issue 23: every preset carries how it is usually run (the library resolves from it)
PRESETS.update({n: s.model_copy(update={"usual": PRESET_DEFAULTS[n]}) for n, s in PRESETS.items()})
