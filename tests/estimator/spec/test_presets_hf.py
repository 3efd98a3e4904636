"""Every preset's parameter count equals its Hugging Face (or torch) twin's, to the integer.

The twins are built from configs written here from the published hyperparameters (no
download), with random init on the meta device, so even the 8B models cost no memory.
"""

from __future__ import annotations

from typing import Any

import pytest

from estimator.spec import ModelSpec, SpecError, UnsupportedError
from estimator.spec.presets import PRESETS, get_preset
from estimator.terms.params import params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def n_unique_params(model: Any) -> int:
    """Parameters of a module, each storage once (tied weights are one tensor)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already skips repeated Parameter objects
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _gpt2(n_layer: int, d: int, h: int) -> tuple[Any, Any]:
    # GPT2LMHeadModel: wte (tied lm_head), wpe, h.*.{ln_1, attn.c_attn, attn.c_proj, ln_2,
    # mlp.c_fc, mlp.c_proj}, ln_f.
    cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=d, n_head=h)
    return cfg, transformers.GPT2LMHeadModel


def _bert(n_layer: int, d: int, h: int) -> tuple[Any, Any]:
    # BertModel(add_pooling_layer=True): embeddings (word, position, token_type, LayerNorm),
    # encoder, pooler.dense.
    cfg = transformers.BertConfig(
        hidden_size=d, num_hidden_layers=n_layer, num_attention_heads=h, intermediate_size=4 * d
    )
    return cfg, transformers.BertModel


def _t5(n_layer: int, d: int, h: int, d_ff: int) -> tuple[Any, Any]:
    # T5ForConditionalGeneration: shared embedding (tied to both stacks and lm_head),
    # relative_attention_bias in block 0 of each stack, T5LayerNorm (weight only), no biases.
    cfg = transformers.T5Config(d_model=d, d_kv=64, d_ff=d_ff, num_layers=n_layer, num_heads=h)
    return cfg, transformers.T5ForConditionalGeneration


def _llama(cls: str, **kw: Any) -> tuple[Any, Any]:
    # LlamaForCausalLM / MistralForCausalLM: embed_tokens, layers.*.{self_attn.{q,k,v,o}_proj,
    # mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, norm, lm_head.
    config_cls = getattr(transformers, cls.replace("ForCausalLM", "Config"))
    common = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)  # fmt: skip
    return config_cls(**common, **kw), getattr(transformers, cls)


HF_TWINS = {
    "bert-base": lambda: _bert(12, 768, 12),
    "bert-large": lambda: _bert(24, 1024, 16),
    "gpt2-small": lambda: _gpt2(12, 768, 12),
    "gpt2-medium": lambda: _gpt2(24, 1024, 16),
    "gpt2-large": lambda: _gpt2(36, 1280, 20),
    "gpt2-xl": lambda: _gpt2(48, 1600, 25),
    "t5-small": lambda: _t5(6, 512, 8, 2048),
    "t5-base": lambda: _t5(12, 768, 12, 3072),
    # BartForConditionalGeneration (facebook/bart-base): model.shared tied to both stacks'
    # embed_tokens and lm_head; BartLearnedPositionalEmbedding(1024 + 2, d) per stack.
    "bart-base": lambda: (
        transformers.BartConfig(
            d_model=768,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=12,
            decoder_attention_heads=12,
            encoder_ffn_dim=3072,
            decoder_ffn_dim=3072,
        ),
        transformers.BartForConditionalGeneration,
    ),  # fmt: skip
    # ViTModel (google/vit-base-patch16-224, with pooler): cls_token, position_embeddings
    # [1, 197, d], patch_embeddings.projection Conv2d(3, d, 16, 16), layernorm, pooler.dense.
    "vit-b-16": lambda: (transformers.ViTConfig(), transformers.ViTModel),
    "llama-2-7b": lambda: _llama(
        "LlamaForCausalLM",
        vocab_size=32000,
        intermediate_size=11008,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rope_theta=10000.0,
    ),  # fmt: skip
    "llama-3-8b": lambda: _llama(
        "LlamaForCausalLM",
        vocab_size=128256,
        intermediate_size=14336,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),  # fmt: skip
    "mistral-7b": lambda: _llama(
        "MistralForCausalLM",
        vocab_size=32000,
        intermediate_size=14336,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        sliding_window=4096,
        rope_theta=10000.0,
    ),  # fmt: skip
}


def build(name: str) -> tuple[Any, Any]:
    cfg, cls = HF_TWINS[name]()
    with torch.device("meta"):
        return cfg, cls(cfg)


def test_every_preset_has_a_twin() -> None:
    # issue 22's presets: their twins are their published config.json files
    # (estimator/spec/hf_twins.py, checked against the classes in test_hf_twins.py)
    from estimator.spec.presets import PUBLISHED

    papers = {"gpt-3-175b", "gopher-280b", "chinchilla-70b"}
    vaswani = {"transformer-base", "transformer-big"}
    assert set(HF_TWINS) | vaswani | set(PUBLISHED) | papers == set(PRESETS)


@pytest.mark.parametrize("name", sorted(HF_TWINS))
def test_params_match_hf_numel(name: str) -> None:
    _, model = build(name)
    assert params(get_preset(name)).total == n_unique_params(model)


@pytest.mark.parametrize("name", sorted(HF_TWINS))
def test_spec_from_hf_config_matches_preset(name: str) -> None:
    cfg, model = build(name)
    spec = ModelSpec.from_hf_config(cfg.to_dict())
    assert params(spec).total == n_unique_params(model)
    # a preset is our reference model; activation_fn, fused_qkv say how HF computes it
    which = {
        "name",
        "implementation",
        "hf_architecture",
        "activation_fn",
        "fused_qkv",
        "fused_gate_up",
        "usual",
    }
    preset = get_preset(name).model_dump(exclude=which)
    assert spec.model_dump(exclude=which) == preset
    assert spec.implementation == "hf"


@pytest.mark.parametrize("name", ["transformer-base", "transformer-big"])
def test_transformer_params_match_torch_nn_transformer(name: str) -> None:
    # Vaswani et al. 2017 as torch.nn.Transformer: post-norm (norm_first=False) encoder and
    # decoder layers, no final norms (the paper has none), plus one shared Embedding(V, d)
    # tied with the output projection.
    spec = get_preset(name)
    nn = torch.nn
    layer_kw = dict(d_model=spec.d_model, nhead=spec.n_heads, dim_feedforward=spec.d_ff)
    with torch.device("meta"):
        enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_kw),
            spec.n_encoder_layers,
            enable_nested_tensor=False,
        )
        dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer_kw), spec.n_decoder_layers)
        model = nn.ModuleDict(
            {"embed": nn.Embedding(spec.vocab_size, spec.d_model), "enc": enc, "dec": dec}
        )
    assert params(spec).total == n_unique_params(model)


def per_layer(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def test_gpt2_attention_and_ffn_terms_match_hf_layer() -> None:
    _, model = build("gpt2-small")
    t, L = params(get_preset("gpt2-small")).terms, 12
    block = model.transformer.h[0]
    attn = sum(t[f"decoder.layers.self_attn.{p}_proj"] for p in "qkvo")
    assert attn == L * per_layer(block.attn)  # c_attn fuses q, k, v
    assert t["decoder.layers.ffn.up"] == L * per_layer(block.mlp.c_fc)
    assert t["decoder.layers.ffn.down"] == L * per_layer(block.mlp.c_proj)
    assert t["decoder.pos"] == model.transformer.wpe.weight.numel()
    assert t["embed"] == model.transformer.wte.weight.numel()
    assert "lm_head" not in t  # tied: GPT2LMHeadModel.lm_head.weight is wte.weight
    assert model.lm_head.weight is model.transformer.wte.weight


def test_llama3_gqa_projection_terms_match_hf_layer() -> None:
    _, model = build("llama-3-8b")
    t, L = params(get_preset("llama-3-8b")).terms, 32
    layer = model.model.layers[0]
    for p in "qkvo":
        hf = getattr(layer.self_attn, f"{p}_proj")
        assert t[f"decoder.layers.self_attn.{p}_proj"] == L * per_layer(hf)
    assert t["decoder.layers.ffn.gate"] == L * per_layer(layer.mlp.gate_proj)
    assert t["decoder.layers.attn_norm"] == L * per_layer(layer.input_layernorm)
    assert t["lm_head"] == model.lm_head.weight.numel()


def test_bert_embedding_terms_match_hf() -> None:
    _, model = build("bert-base")
    t, emb = params(get_preset("bert-base")).terms, model.embeddings
    assert t["encoder.token_type"] == per_layer(emb.token_type_embeddings)
    assert t["encoder.pos"] == per_layer(emb.position_embeddings)
    assert t["encoder.embed_norm"] == per_layer(emb.LayerNorm)
    assert t["pooler.proj"] == per_layer(model.pooler)


def test_t5_relative_bias_and_cross_attention_terms_match_hf() -> None:
    _, model = build("t5-small")
    t = params(get_preset("t5-small")).terms
    for stack in ("encoder", "decoder"):
        bias = getattr(model, stack).block[0].layer[0].SelfAttention.relative_attention_bias
        assert t[f"{stack}.pos"] == bias.weight.numel()
    cross = model.decoder.block[0].layer[1].EncDecAttention
    assert sum(t[f"decoder.layers.cross_attn.{p}_proj"] for p in "qkvo") == 6 * per_layer(cross)


def test_bart_and_vit_position_terms_match_hf() -> None:
    _, bart = build("bart-base")
    t = params(get_preset("bart-base")).terms
    assert t["encoder.pos"] == bart.model.encoder.embed_positions.weight.numel()  # 1026 x d
    assert t["decoder.embed_norm"] == per_layer(bart.model.decoder.layernorm_embedding)
    _, vit = build("vit-b-16")
    t = params(get_preset("vit-b-16")).terms
    assert t["encoder.pos"] == vit.embeddings.position_embeddings.numel()
    assert t["encoder.patch"] == vit.embeddings.cls_token.numel()
    assert t["encoder.patch.proj"] == per_layer(vit.embeddings.patch_embeddings.projection)


def test_get_preset_is_case_insensitive_and_lists_names_on_a_miss() -> None:
    assert get_preset("GPT2-Small") is PRESETS["gpt2-small"]
    with pytest.raises(SpecError, match="preset='gpt5'.*gpt2-small"):
        get_preset("gpt5")


def test_hf_config_reads_a_path_and_its_folder(tmp_path: Any) -> None:
    cfg, _ = HF_TWINS["gpt2-small"]()
    cfg.save_pretrained(tmp_path)
    assert ModelSpec.from_hf_config(tmp_path).model_dump(
        exclude={"name"}
    ) == ModelSpec.from_hf_config(tmp_path / "config.json").model_dump(exclude={"name"})
    assert params(ModelSpec.from_hf_config(str(tmp_path))).total == 124_439_808  # GPT-2 small


def test_hf_config_rejects_unknown_model_type_by_name() -> None:
    with pytest.raises(SpecError, match="model_type='falcon'"):
        ModelSpec.from_hf_config({"model_type": "falcon"})


@pytest.mark.parametrize(
    ("model_type", "field", "value"),
    [
        ("bert", "position_embedding_type", "relative_key"),
        ("gpt2", "add_cross_attention", True),
        ("llama", "mlp_bias", True),
        ("bart", "decoder_ffn_dim", 1024),
        ("vit", "qkv_bias", False),
        ("llama", "hidden_act", "relu"),
    ],
)
def test_hf_config_rejects_unmodelled_fields_by_name(
    model_type: str, field: str, value: Any
) -> None:
    name = {"bert": "bert-base", "gpt2": "gpt2-small", "llama": "llama-2-7b", "bart": "bart-base",
            "vit": "vit-b-16"}[model_type]  # fmt: skip
    cfg = HF_TWINS[name]()[0].to_dict()
    cfg[field] = value
    with pytest.raises(UnsupportedError, match=field):
        ModelSpec.from_hf_config(cfg)


def test_hf_config_gated_t5_is_geglu_and_matches_hf() -> None:
    # T5 v1.1 (google/t5-v1_1-small): gated-gelu FFN (wi_0, wi_1, wo). Its published
    # config.json says tie_word_embeddings=false; transformers 5's T5Config turns that into
    # scale_decoder_outputs=False and always ties lm_head to shared, so the twin is tied.
    published = dict(
        model_type="t5", d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
        vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    )  # fmt: skip
    cfg = transformers.T5Config(**{k: v for k, v in published.items() if k != "model_type"})
    spec = ModelSpec.from_hf_config(cfg.to_dict())
    assert spec.activation == "geglu"
    with torch.device("meta"):
        model = transformers.T5ForConditionalGeneration(cfg)
    assert params(spec).total == n_unique_params(model)
    untied = params(ModelSpec.from_hf_config(published)).terms
    assert untied["lm_head"] == model.lm_head.weight.numel()  # the file as written: untied
