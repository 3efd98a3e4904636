"""ModelSpec fields from the config.json of the families of issue 22 (transformers 5.x):
qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral, gemma2, gemma3_text (Gemma 3's text model), phi3,
deepseek_v3, gpt_neox, falcon, olmo2. Each reader names the transformers code whose modules it
describes; the parameter count equals the class built on the meta device for a real published
config of each family (tests/estimator/spec/test_hf_families.py, configs under
tests/estimator/spec/hf_configs/). A config field combination not modelled raises
UnsupportedError naming the field. Plain JSON; never imports transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.files import short_repr
from estimator.spec.hf_activation import activation
from estimator.spec.hf_activation import reject as _reject
from estimator.spec.hf_keys import ACTIVATION_KEY

Config = dict[str, Any]

#: config keys these readers read as counts (an int >= 1), checked before any arithmetic
COUNTS = frozenset({
    "moe_intermediate_size", "shared_expert_intermediate_size", "num_experts",
    "num_experts_per_tok", "num_local_experts", "n_routed_experts", "n_shared_experts",
    "decoder_sparse_step", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
    "v_head_dim", "ffn_hidden_size", "num_kv_heads",
})  # fmt: skip
_MAY_BE_ZERO = frozenset({"first_k_dense_replace", "n_shared_experts"})


def check_counts(cfg: Config) -> None:
    """SpecError for a count of these families of the wrong type or sign."""
    for key in COUNTS | _MAY_BE_ZERO:
        value = cfg.get(key)
        if value is None:
            continue
        low = 0 if key in _MAY_BE_ZERO else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SpecError(f"{key}={short_repr(value)} is invalid: an integer >= {low}")


#: issue 22k: the defaults of the config classes where they differ from the readers' usual
#: ones: MixtralConfig.default_theta, Gemma3TextConfig.default_theta["global"] (its full
#: layers), rms_norm_eps of MixtralConfig / Olmo2Config / Phi3Config
_DEFAULT_THETA = {"mixtral": 1e6, "gemma3_text": 1e6}
_DEFAULT_RMS_EPS = {"mixtral": 1e-5, "olmo2": 1e-5, "phi3": 1e-5}


def _theta(cfg: Config, layer_type: str | None = None) -> float:
    rope = cfg.get("rope_parameters") or {}
    if layer_type and isinstance(rope.get(layer_type), dict):
        rope = rope[layer_type]
    default = _DEFAULT_THETA.get(cfg.get("model_type"), 10000.0)  # type: ignore[arg-type]
    return float(rope.get("rope_theta", cfg.get("rope_theta", default)))


def _partial_rotary(cfg: Config, head_dim: int, default: float = 1.0) -> int | None:
    rope = cfg.get("rope_parameters") or {}
    factor = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", default))
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor <= 1:
        raise SpecError(f"partial_rotary_factor={short_repr(factor)} is invalid: in (0, 1]")
    dim = int(head_dim * factor)  # GPTNeoXAttention.rotary_ndims, Phi3RotaryEmbedding dim
    return None if dim == head_dim else dim


def _no_sliding(cfg: Config) -> None:
    """Qwen2/3 configs carry sliding_window but apply it only with use_sliding_window
    (configuration_qwen2.Qwen2Config.__post_init__): per-layer windows are not read here."""
    _reject(cfg, "use_sliding_window", False, "per-layer sliding windows of Qwen")
    types = cfg.get("layer_types")
    if types is not None and any(t != "full_attention" for t in types):
        raise UnsupportedError(
            f"layer_types={short_repr(types)} is not modelled for model_type="
            f"{cfg['model_type']!r}: only full_attention layers"
        )


def _decoder(cfg: Config, *, head_dim: int | None = None, **fields: Any) -> dict[str, Any]:
    """The fields every decoder here shares (a Llama-like rmsnorm / rotary / gated SiLU
    decoder, as transformers' LlamaModel); ``fields`` override them."""
    n_heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"]
    out = dict(
        arch="decoder", n_decoder_layers=cfg["num_hidden_layers"], d_model=d, n_heads=n_heads,
        n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        head_dim=head_dim or cfg.get("head_dim") or d // n_heads, d_ff=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"], max_seq_len=cfg["max_position_embeddings"],
        activation=_activation(cfg, "hidden_act"), norm="rmsnorm",
        norm_eps=cfg.get("rms_norm_eps", _DEFAULT_RMS_EPS.get(cfg["model_type"], 1e-6)),
        bias=False,
        tie_embeddings=cfg.get("tie_word_embeddings", False), position="rotary",
        rope_theta=_theta(cfg),
    )  # fmt: skip
    out.update(fields)
    return out


def _activation(cfg: Config, key: str) -> str:
    """The gated FFN's activation; a config without ``key`` has its class's default
    (hf_keys.ACTIVATION_KEY: silu for the Llama-like families), as transformers builds it."""
    default = ACTIVATION_KEY[cfg["model_type"]][1]
    return activation({**cfg, key: cfg.get(key, default)}, key, gated=True)


def _moe_dense_layers(cfg: Config) -> tuple[int, ...]:
    """Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: layer i is sparse unless it is in
    mlp_only_layers or (i + 1) % decoder_sparse_step != 0."""
    L, step = cfg["num_hidden_layers"], cfg.get("decoder_sparse_step", 1)
    only = cfg.get("mlp_only_layers") or []
    if not isinstance(only, list) or any(not isinstance(i, int) or isinstance(i, bool)
                                         for i in only):  # fmt: skip
        raise SpecError(f"mlp_only_layers={short_repr(only)} is invalid: a list of layer indices")
    return tuple(i for i in range(L) if i in only or (i + 1) % step)


def _qwen2(cfg: Config) -> dict[str, Any]:
    """modeling_qwen2.Qwen2Attention: q, k, v with biases, o_proj without; Qwen2MLP no biases."""
    _no_sliding(cfg)
    return _decoder(cfg, qkv_bias=True, o_bias=False, ffn_bias=False)


def _qwen3(cfg: Config) -> dict[str, Any]:
    """modeling_qwen3.Qwen3Attention: q/k/v/o biases = attention_bias, q_norm and k_norm
    RMSNorm(head_dim) per head before rotary."""
    _no_sliding(cfg)
    return _decoder(cfg, bias=cfg.get("attention_bias", False), ffn_bias=False, qk_norm="head")


def _qwen2_moe(cfg: Config) -> dict[str, Any]:
    """modeling_qwen2_moe: Qwen2MoeSparseMoeBlock (experts [E, 2 d_e, d] + [E, d, d_e], router
    [E, d], shared_expert Qwen2MoeMLP(shared_expert_intermediate_size) gated by a sigmoid
    Linear(d, 1)); dense Qwen2MoeMLP(intermediate_size) on the layers _moe_dense_layers names."""
    _no_sliding(cfg)
    return _decoder(
        cfg, qkv_bias=cfg.get("qkv_bias", True), o_bias=False, ffn_bias=False,
        n_experts=cfg["num_experts"], n_experts_per_token=cfg["num_experts_per_tok"],
        expert_d_ff=cfg["moe_intermediate_size"], n_shared_experts=1,
        shared_expert_d_ff=cfg["shared_expert_intermediate_size"], shared_expert_gate=True,
        dense_layers=_moe_dense_layers(cfg),
    )  # fmt: skip


def _qwen3_moe(cfg: Config) -> dict[str, Any]:
    """modeling_qwen3_moe: Qwen3Attention's layout (qk_norm per head) and
    Qwen3MoeSparseMoeBlock (experts and router, no shared expert)."""
    _reject(cfg, "use_sliding_window", False, "sliding windows of Qwen3-MoE")
    return _decoder(
        cfg, bias=cfg.get("attention_bias", False), ffn_bias=False, qk_norm="head",
        n_experts=_qwen3_moe_experts(cfg), n_experts_per_token=cfg["num_experts_per_tok"],
        expert_d_ff=cfg["moe_intermediate_size"], dense_layers=_moe_dense_layers(cfg),
    )  # fmt: skip


def _qwen3_moe_experts(cfg: Config) -> int:
    """configuration_qwen3_moe.Qwen3MoeConfig.attribute_map: num_experts -> num_local_experts
    (the hub's configs name num_experts, transformers 5's to_dict writes num_local_experts)."""
    if "num_experts" in cfg and "num_local_experts" in cfg:
        _reject(cfg, "num_local_experts", cfg["num_experts"], "two expert counts")
    return cfg["num_experts"] if "num_experts" in cfg else cfg["num_local_experts"]


def _mixtral(cfg: Config) -> dict[str, Any]:
    """modeling_mixtral: MistralAttention's layout, MixtralSparseMoeBlock in every layer
    (MixtralExperts of intermediate_size, MixtralTopKRouter [E, d])."""
    return _decoder(
        cfg, n_experts=cfg["num_local_experts"], n_experts_per_token=cfg["num_experts_per_tok"],
        expert_d_ff=cfg["intermediate_size"], sliding_window=cfg.get("sliding_window"),
    )  # fmt: skip


def _layer_pattern(cfg: Config, default_every: int) -> tuple[str, ...]:
    """Gemma2Config / Gemma3TextConfig.__post_init__: layer_types, else layer i slides unless
    (i + 1) % every == 0 (Gemma 2: every 2nd layer global; Gemma 3: sliding_window_pattern)."""
    types = cfg.get("layer_types")
    every = cfg.get("sliding_window_pattern", default_every)
    if types is None:
        types = ["sliding_attention" if (i + 1) % every else "full_attention"
                 for i in range(cfg["num_hidden_layers"])]  # fmt: skip
    kinds = {"sliding_attention": "sliding", "full_attention": "full"}
    if not isinstance(types, list) or any(t not in kinds for t in types):
        raise UnsupportedError(
            f"layer_types={short_repr(types)} is not modelled for model_type="
            f"{cfg['model_type']!r}: sliding_attention and full_attention layers"
        )
    return tuple(kinds[t] for t in types)


def _gemma(cfg: Config, every: int, **fields: Any) -> dict[str, Any]:
    """Gemma2DecoderLayer: input_layernorm, post_attention_layernorm, pre_feedforward_layernorm
    and post_feedforward_layernorm (sandwich norms); Gemma2TextScaledWordEmbedding multiplies
    by sqrt(d); biases on q/k/v/o = attention_bias; GeGLU (gelu_pytorch_tanh); tied head."""
    if cfg.get("use_bidirectional_attention"):
        _reject(cfg, "use_bidirectional_attention", False, "causal Gemma only")
    # Gemma2MLP / Gemma3MLP read hidden_activation only (hidden_act is no field of their
    # configs: estimator/spec/hf_keys.py ignores it)
    act = cfg.get("hidden_activation") or "gelu_pytorch_tanh"
    activation({**cfg, "hidden_activation": act}, "hidden_activation", gated=True)  # names it
    return _decoder(
        {**cfg, "hidden_act": act}, bias=cfg.get("attention_bias", False), ffn_bias=False,
        activation_fn=act, sublayer_norm="sandwich", embed_scale=True,
        tie_embeddings=cfg.get("tie_word_embeddings", True),
        layer_pattern=_layer_pattern(cfg, every), sliding_window=cfg.get("sliding_window"),
        attn_softcap=cfg.get("attn_logit_softcapping"),
        final_softcap=cfg.get("final_logit_softcapping"), **fields,
    )  # fmt: skip


def _gemma2(cfg: Config) -> dict[str, Any]:
    """modeling_gemma2 (soft-capped scores 50 and logits 30 by default, Gemma2Config)."""
    return _gemma({"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, **cfg}, 2)


def _gemma3_text(cfg: Config) -> dict[str, Any]:
    """modeling_gemma3 Gemma3TextModel: Gemma 2's layer plus q_norm / k_norm RMSNorm(head_dim);
    rotary theta per layer kind (the full layers' theta is the spec's rope_theta)."""
    return _gemma(cfg, 6, qk_norm="head", rope_theta=_theta(cfg, "full_attention"))


def _gemma3(cfg: Config) -> dict[str, Any]:
    raise UnsupportedError(
        "model_type='gemma3' is Gemma3ForConditionalGeneration (a SigLIP vision tower and a "
        "projector around the text model): not modelled; give its text_config "
        "(model_type='gemma3_text')"
    )


def _phi3(cfg: Config) -> dict[str, Any]:
    """modeling_phi3: Phi3Attention's one qkv_proj d -> (h + 2 h_kv) d_h and Phi3MLP's one
    gate_up_proj d -> 2 d_ff, no biases; one window for every layer (sliding_window)."""
    n_heads = cfg["num_attention_heads"]
    head_dim = cfg["hidden_size"] // n_heads
    return _decoder(
        cfg, head_dim=head_dim, fused_qkv=True, fused_gate_up=True,
        norm_eps=cfg.get("rms_norm_eps", 1e-5),
        sliding_window=cfg.get("sliding_window"), rotary_dim=_partial_rotary(cfg, head_dim),
    )  # fmt: skip


def _deepseek_v3(cfg: Config) -> dict[str, Any]:
    """modeling_deepseek_v3: DeepseekV3Attention (latent attention), DeepseekV3MoE (256 routed
    experts of moe_intermediate_size, a DeepseekV3TopkRouter [E, d] in fp32 with its
    e_score_correction_bias buffer, both kept fp32 in a bf16 model by
    DeepseekV3PreTrainedModel._keep_in_fp32_modules_strict; routing F.linear in fp32), one
    DeepseekV3MLP of n_shared_experts * d_e) on layers
    >= first_k_dense_replace, DeepseekV3MLP(intermediate_size) below. The multi-token
    prediction module (num_nextn_predict_layers) is not built by transformers, nor counted."""
    _reject(cfg, "moe_layer_freq", 1, "every layer past first_k_dense_replace is MoE")
    nope, rope = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
    n_heads = cfg["num_attention_heads"]
    first_dense = cfg.get("first_k_dense_replace", 0)
    L = cfg["num_hidden_layers"]
    return _decoder(
        cfg, head_dim=nope + rope, n_kv_heads=n_heads, bias=cfg.get("attention_bias", False),
        o_bias=cfg.get("attention_bias", False), ffn_bias=False,
        q_lora_rank=cfg.get("q_lora_rank"), kv_lora_rank=cfg["kv_lora_rank"],
        qk_rope_head_dim=rope, qk_nope_head_dim=nope, v_head_dim=cfg["v_head_dim"],
        n_experts=cfg["n_routed_experts"], n_experts_per_token=cfg["num_experts_per_tok"],
        expert_d_ff=cfg["moe_intermediate_size"], n_shared_experts=cfg.get("n_shared_experts", 0),
        dense_layers=tuple(range(min(first_dense, L))), router_fp32=True,
        router_groups=cfg.get("n_group", 8), router_topk_groups=cfg.get("topk_group", 4),
        router_norm_topk=bool(cfg.get("norm_topk_prob", True)),
    )  # fmt: skip


def _gpt_neox(cfg: Config) -> dict[str, Any]:
    """modeling_gpt_neox: GPTNeoXAttention query_key_value d -> 3d and dense d -> d (biases =
    attention_bias), GPTNeoXMLP with biases, LayerNorms; use_parallel_residual: attention and
    MLP read input_layernorm / post_attention_layernorm of the same input; partial rotary."""
    n_heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"]
    bias = cfg.get("attention_bias", True)
    parallel = cfg.get("use_parallel_residual", True)
    return dict(
        arch="decoder", n_decoder_layers=cfg["num_hidden_layers"], d_model=d, n_heads=n_heads,
        d_ff=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
        max_seq_len=cfg["max_position_embeddings"],
        activation=_plain_activation(cfg, "hidden_act", "gelu"),
        activation_fn=cfg.get("hidden_act", "gelu"), norm="layernorm",
        norm_eps=cfg.get("layer_norm_eps", 1e-5), bias=bias, ffn_bias=True, fused_qkv=True,
        tie_embeddings=cfg.get("tie_word_embeddings", False), position="rotary",
        rope_theta=_neox_theta(cfg), rotary_dim=_partial_rotary(cfg, d // n_heads, cfg.get(
            "rotary_pct", 0.25)),
        parallel_block="two_norms" if parallel else "none",
    )  # fmt: skip


def _neox_theta(cfg: Config) -> float:
    """GPTNeoXConfig.convert_rope_params_to_dict: rope_parameters' rope_theta, else the legacy
    rotary_emb_base (GPT-NeoX-20B's config.json), else 10000."""
    base = cfg.get("rotary_emb_base")
    if base is None:
        return _theta(cfg)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise SpecError(f"rotary_emb_base={short_repr(base)} is invalid: a number > 0")
    return _theta({**cfg, "rope_theta": cfg.get("rope_theta", base)})


def _plain_activation(cfg: Config, key: str, default: str) -> str:
    return activation({**cfg, key: cfg.get(key, default)}, key)


def _falcon(cfg: Config) -> dict[str, Any]:
    """modeling_falcon: FalconAttention's query_key_value d -> (h + 2 h_kv) d_h (h_kv:
    num_kv_heads with new_decoder_architecture, 1 with multi_query, else h), dense, FalconMLP
    (ffn_hidden_size), biases = bias; FalconDecoderLayer: parallel_attn with one
    input_layernorm (ln_attn and ln_mlp when num_ln_in_parallel_attn == 2, the default of the
    new architecture), else sequential input_layernorm / post_attention_layernorm."""
    _reject(cfg, "alibi", False, "ALiBi positions")
    n_heads = cfg["num_attention_heads"]
    d = cfg.get("hidden_size", cfg.get("n_embed"))
    new = cfg.get("new_decoder_architecture", False)
    if new:
        n_kv = cfg.get("num_kv_heads") or n_heads
    else:
        n_kv = 1 if cfg.get("multi_query", True) else n_heads
    parallel = cfg.get("parallel_attn", True)
    n_ln = cfg.get("num_ln_in_parallel_attn") or (2 if new else 1)
    if parallel:
        block = "two_norms" if n_ln == 2 else "one_norm"
    else:
        block = "none"
    return dict(
        arch="decoder", n_decoder_layers=cfg["num_hidden_layers"], d_model=d, n_heads=n_heads,
        n_kv_heads=n_kv, d_ff=cfg.get("ffn_hidden_size") or 4 * d, vocab_size=cfg["vocab_size"],
        max_seq_len=cfg.get("max_position_embeddings", 2048),
        activation=_plain_activation(cfg, "activation", "gelu"),
        activation_fn=cfg.get("activation", "gelu"), norm="layernorm",
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5), bias=cfg.get("bias", False),
        fused_qkv=True, tie_embeddings=cfg.get("tie_word_embeddings", True),
        position="rotary", rope_theta=_theta(cfg), parallel_block=block,
    )  # fmt: skip


def _olmo2(cfg: Config) -> dict[str, Any]:
    """modeling_olmo2: Olmo2Attention q_norm RMSNorm(h d_h) and k_norm RMSNorm(h_kv d_h) over
    the whole projection; Olmo2DecoderLayer norms each sublayer's output
    (post_attention_layernorm, post_feedforward_layernorm) before the residual add, no input
    norm."""
    return _decoder(cfg, bias=cfg.get("attention_bias", False), ffn_bias=False,
                    qk_norm="full", sublayer_norm="output")  # fmt: skip


def _checked(reader: Callable[[Config], dict[str, Any]]) -> Callable[[Config], dict[str, Any]]:
    def read(cfg: Config) -> dict[str, Any]:
        check_counts(cfg)
        return reader(cfg)

    read.__doc__ = reader.__doc__
    return read


_READERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "mixtral": _mixtral,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
    "gemma3": _gemma3,
    "phi3": _phi3,
    "deepseek_v3": _deepseek_v3,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
    "olmo2": _olmo2,
}
READERS = {name: _checked(reader) for name, reader in _READERS.items()}

#: family -> the transformers class its spec describes
DEFAULT_ARCHITECTURE = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForConditionalGeneration",
    "phi3": "Phi3ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
    "falcon": "FalconForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
}
