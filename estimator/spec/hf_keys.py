"""Which config.json keys each Hugging Face family models, which change no tensor, and which
tgauge refuses: a key that changes parameters, shapes or saved tensors is read by the family's
reader (estimator/spec/hf_config.py; issue 22's families in estimator/spec/hf_families.py) or
refused here by name, never dropped without a word.

Per family (``FAMILY_KEYS``), as data:
  read      keys the family's reader turns into ModelSpec fields (modelled)
  ignored   keys the transformers class never turns into a tensor of a training step or a
            forward pass (token ids, init, dropout probabilities the workload sets, a head
            class tgauge does not build), each group with the reason
  fixed     key -> the one value tgauge models (the class's default); another value is refused
Every other key is refused (``check_keys``): e.g. a Mixtral config relabelled as ``mistral``
is refused for ``num_local_experts`` (MixtralSparseMoeBlock), not read as a dense 7 B model.

transformers 5.x sources read for each table: configuration_utils.PretrainedConfig (the keys
every config holds), generation/configuration_utils.GenerationConfig (generation settings a
hub config.json may still carry), models/<family>/configuration_<family>.py and the
``config.<key>`` reads of models/<family>/modeling_<family>.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from estimator.spec.errors import UnsupportedError
from estimator.spec.files import short_repr

# PretrainedConfig's own keys and hub bookkeeping: no tensor depends on them
_BOOKKEEPING = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype",
    "dtype", "return_dict", "use_return_dict", "torchscript", "use_bfloat16", "tokenizer_class",
    "prefix", "task_specific_params", "finetuning_task", "id2label", "label2id", "num_labels",
    "problem_type", "is_encoder_decoder", "_attn_implementation_autoset", "attn_implementation",
    "tf_legacy_loss", "gradient_checkpointing", "output_past", "_commit_hash",
})  # fmt: skip
# token ids: which ids the inputs hold, never a shape
_TOKEN_IDS = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "forced_bos_token_id", "forced_eos_token_id",
})  # fmt: skip
# initialisation scales: values of the weights, not their shapes
_INIT = frozenset({"initializer_range", "initializer_factor", "init_std"})
# GenerationConfig settings a hub config.json may carry: tgauge's decode workload
# (new_tokens, prompt_len) decides the passes, not these
_GENERATION = frozenset({
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "max_new_tokens", "renormalize_logits", "forced_decoder_ids",
})  # fmt: skip
# dropout probabilities: the workload's ``dropout`` sets every one of them on the built model
# (tgauge/hf_models.DROPOUT_FIELDS); a classifier's own dropout follows it
_DROPOUT = frozenset({
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "dropout_rate", "dropout", "attention_dropout",
    "activation_dropout", "classifier_dropout", "classif_dropout",
})  # fmt: skip
COMMON_IGNORED = _BOOKKEEPING | _TOKEN_IDS | _INIT | _GENERATION | _DROPOUT

#: keys every family fixes at PretrainedConfig's default: another value keeps more tensors
#: (the attention probabilities, every hidden state), chunks the FFN, prunes heads, ties the
#: two stacks or adds cross-attention; ``use_cache`` is the workload's (Workload.use_cache)
COMMON_FIXED: dict[str, Any] = {
    "output_attentions": False, "output_hidden_states": False, "chunk_size_feed_forward": 0,
    "pruned_heads": {}, "tie_encoder_decoder": False, "add_cross_attention": False,
    "use_cache": True,
}  # fmt: skip


@dataclass(frozen=True)
class FamilyKeys:
    """The keys of one model_type: read by its reader, ignored (why), fixed (value)."""

    read: frozenset[str]
    ignored: frozenset[str] = frozenset()
    fixed: dict[str, Any] = field(default_factory=dict)


_LLAMA_READ = frozenset({
    "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings", "hidden_act",
    "rms_norm_eps", "attention_bias", "mlp_bias", "tie_word_embeddings", "rope_theta",
    "rope_parameters", "rope_scaling", "sliding_window",
})  # fmt: skip

FAMILY_KEYS: dict[str, FamilyKeys] = {
    # modeling_gpt2.GPT2Attention reads scale_attn_weights, scale_attn_by_inverse_layer_idx,
    # reorder_and_upcast_attn (_upcast_and_reordered_attn: fp32 baddbmm scores); summary_* are
    # GPT2DoubleHeadsModel's head; n_ctx is the 2019 name of n_positions, read by no code
    "gpt2": FamilyKeys(
        read=frozenset(
            {
                "n_embd",
                "n_layer",
                "n_head",
                "n_inner",
                "vocab_size",
                "n_positions",
                "activation_function",
                "layer_norm_epsilon",
                "tie_word_embeddings",
            }
        ),
        ignored=frozenset(
            {
                "n_ctx",
                "summary_type",
                "summary_use_proj",
                "summary_activation",
                "summary_proj_to_labels",
                "summary_first_dropout",
                "summary_last_dropout",
            }
        ),
        fixed={
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
        },
    ),  # fmt: skip
    "bert": FamilyKeys(
        read=frozenset(
            {
                "num_hidden_layers",
                "hidden_size",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
                "max_position_embeddings",
                "hidden_act",
                "layer_norm_eps",
                "type_vocab_size",
                "position_embedding_type",
                "tie_word_embeddings",
            }
        ),
        fixed={"is_decoder": False},
    ),  # fmt: skip
    # configuration_t5.T5Config derives dense_act_fn and is_gated_act from feed_forward_proj
    # and scale_decoder_outputs from tie_word_embeddings (both read)
    "t5": FamilyKeys(
        read=frozenset(
            {
                "num_layers",
                "num_decoder_layers",
                "d_model",
                "num_heads",
                "d_kv",
                "d_ff",
                "vocab_size",
                "n_positions",
                "feed_forward_proj",
                "layer_norm_epsilon",
                "tie_word_embeddings",
                "relative_attention_num_buckets",
                "relative_attention_max_distance",
            }
        ),
        ignored=frozenset({"dense_act_fn", "is_gated_act", "scale_decoder_outputs"}),
        fixed={"is_decoder": False},
    ),  # fmt: skip
    # BartScaledWordEmbedding multiplies by embed_scale whatever scale_embedding says (1.0 or
    # sqrt(d)): no tensor changes; the *_layerdrop keys skip whole layers at random in training
    "bart": FamilyKeys(
        read=frozenset(
            {
                "encoder_layers",
                "decoder_layers",
                "d_model",
                "encoder_attention_heads",
                "decoder_attention_heads",
                "encoder_ffn_dim",
                "decoder_ffn_dim",
                "vocab_size",
                "max_position_embeddings",
                "activation_function",
                "normalize_before",
                "add_final_layer_norm",
                "tie_word_embeddings",
                "num_hidden_layers",
            }
        ),
        ignored=frozenset(
            {
                "scale_embedding",
                "add_bias_logits",
                "normalize_embedding",
                "static_position_embeddings",
                "extra_pos_embeddings",
            }
        ),
        fixed={"is_decoder": False, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0},
    ),  # fmt: skip
    # encoder_stride is ViTForMaskedImageModeling's decoder (not a modelled class)
    "vit": FamilyKeys(
        read=frozenset(
            {
                "num_hidden_layers",
                "hidden_size",
                "num_attention_heads",
                "intermediate_size",
                "hidden_act",
                "layer_norm_eps",
                "image_size",
                "patch_size",
                "num_channels",
                "qkv_bias",
                "pooler_output_size",
                "pooler_act",
            }
        ),
        ignored=frozenset({"encoder_stride"}),
    ),  # fmt: skip
    # pretraining_tp: read by no code of modeling_llama.py in transformers 5
    "llama": FamilyKeys(read=_LLAMA_READ, ignored=frozenset({"pretraining_tp"})),
    "mistral": FamilyKeys(read=_LLAMA_READ),
}


# issue 22k: the families of issue 22 (estimator/spec/hf_families.py). Each table follows what
# its reader reads; sources read: models/<family>/configuration_<family>.py (the config's
# fields, attribute_map and __post_init__) and the ``config.<key>`` reads of
# models/<family>/modeling_<family>.py, transformers 5.24.
#: the keys hf_families._decoder reads (a Llama-like decoder); rope_scaling is read as plain
#: rotary (it changes no count), _theta reads rope_parameters / rope_theta
_DECODER_READ = frozenset({
    "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings", "hidden_act",
    "rms_norm_eps", "tie_word_embeddings", "rope_theta", "rope_parameters", "rope_scaling",
})  # fmt: skip
# Qwen2Config / Qwen3Config / Qwen2MoeConfig.__post_init__: sliding_window is set to None and
# layer_types made all full_attention unless use_sliding_window (fixed False; _no_sliding), so
# the window and the layer it starts at (max_window_layers) build nothing
_QWEN_WINDOW = frozenset({"sliding_window", "max_window_layers"})
# routing arithmetic on the [tokens, top_k] weights (renormalisation, scaling, group-limited
# choice) and the auxiliary loss's weight: which experts a token picks and how their outputs
# are weighted, no parameter and no tensor of a token's width; the loss itself is computed only
# with output_router_logits (fixed False)
_ROUTING = frozenset({
    "norm_topk_prob", "router_aux_loss_coef", "routed_scaling_factor", "n_group", "topk_group",
})  # fmt: skip
# Qwen2MoeForCausalLM / Qwen3MoeForCausalLM / MixtralForCausalLM: output_router_logits makes
# the forward keep every layer's router logits and add load_balancing_loss_func (more saved
# tensors in training); MixtralSparseMoeBlock multiplies the input by uniform noise in training
# when router_jitter_noise > 0 (a tensor more)
_MOE_FIXED: dict[str, Any] = {"output_router_logits": False}
# Gemma2 / Gemma3 text: Gemma2Attention.scaling = query_pre_attn_scalar ** -0.5 (a number);
# cache_implementation is a GenerationConfig setting (generate()'s cache class), like
# _GENERATION; hidden_act is no field of Gemma2Config / Gemma3TextConfig: Gemma2MLP reads
# hidden_activation only (so does hf_families._gemma)
_GEMMA_IGNORED = frozenset({"query_pre_attn_scalar", "cache_implementation", "hidden_act"})
_GEMMA_READ = (_DECODER_READ - {"hidden_act"}) | {
    "hidden_activation", "attention_bias", "layer_types", "sliding_window",
    "attn_logit_softcapping", "final_logit_softcapping",
}  # fmt: skip
# hidden_dropout (GPTNeoXLayer post_attention_dropout / post_mlp_dropout, FalconDecoderLayer's
# dropout of both branches) is not set by the workload's dropout (tgauge/hf_models.py
# DROPOUT_FIELDS): any other value than 0 keeps masks tgauge does not count
_HIDDEN_DROPOUT: dict[str, Any] = {"hidden_dropout": 0.0}

FAMILY_KEYS.update({
    # configuration_qwen2.Qwen2Config; modeling_qwen2 reads head_dim with getattr. use_mrope
    # (Qwen2.5 configs) is Qwen2-VL's multimodal rotary: read by no code of modeling_qwen2,
    # refused when True rather than dropped
    "qwen2": FamilyKeys(
        read=_DECODER_READ | {"layer_types"},
        ignored=_QWEN_WINDOW,
        fixed={"use_sliding_window": False, "use_mrope": False},
    ),
    # configuration_qwen3.Qwen3Config (attention_bias on q/k/v/o)
    "qwen3": FamilyKeys(
        read=_DECODER_READ | {"layer_types", "attention_bias"},
        ignored=_QWEN_WINDOW,
        fixed={"use_sliding_window": False},
    ),
    # configuration_qwen2_moe.Qwen2MoeConfig
    "qwen2_moe": FamilyKeys(
        read=_DECODER_READ | {
            "layer_types", "qkv_bias", "num_experts", "num_experts_per_tok",
            "moe_intermediate_size", "shared_expert_intermediate_size", "decoder_sparse_step",
            "mlp_only_layers",
        },
        ignored=_QWEN_WINDOW | _ROUTING,
        fixed={"use_sliding_window": False, **_MOE_FIXED},
    ),  # fmt: skip
    # configuration_qwen3_moe.Qwen3MoeConfig: attribute_map num_experts -> num_local_experts
    # (to_dict writes num_local_experts); it has no max_window_layers nor layer_types field and
    # modeling_qwen3_moe reads neither (Qwen3-30B-A3B's config.json still holds
    # max_window_layers and sliding_window; use_sliding_window is fixed False)
    "qwen3_moe": FamilyKeys(
        read=_DECODER_READ | {
            "attention_bias", "num_experts", "num_local_experts", "num_experts_per_tok",
            "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers",
        },
        ignored=_QWEN_WINDOW | _ROUTING,
        fixed={"use_sliding_window": False, **_MOE_FIXED},
    ),  # fmt: skip
    # configuration_mixtral.MixtralConfig (attribute_map num_experts -> num_local_experts: a
    # config naming num_experts is refused here, the reader reads num_local_experts)
    "mixtral": FamilyKeys(
        read=_DECODER_READ | {"num_local_experts", "num_experts_per_tok", "sliding_window"},
        ignored=_ROUTING,
        fixed={**_MOE_FIXED, "router_jitter_noise": 0.0},
    ),
    # configuration_gemma2.Gemma2Config: layer_types (every 2nd layer global by default);
    # Gemma-2's config.json still holds sliding_window_size, read by no code of transformers 5
    # (Gemma2Attention reads sliding_window). sliding_window_pattern is no Gemma2Config field:
    # refused (hf_families._layer_pattern would read it, transformers would not)
    "gemma2": FamilyKeys(
        read=_GEMMA_READ,
        ignored=_GEMMA_IGNORED | {"sliding_window_size"},
        fixed={"use_bidirectional_attention": False},
    ),
    # configuration_gemma3.Gemma3TextConfig: __post_init__ builds layer_types from
    # sliding_window_pattern (read) and stores it as _sliding_window_pattern, which to_dict
    # writes back and no code reads; convert_rope_params_to_dict makes rope_local_base_freq the
    # sliding layers' rotary base (a number: the spec's rope_theta is the full layers')
    "gemma3_text": FamilyKeys(
        read=_GEMMA_READ | {"sliding_window_pattern"},
        ignored=_GEMMA_IGNORED | {"_sliding_window_pattern", "rope_local_base_freq"},
        fixed={"use_bidirectional_attention": False},
    ),
    # configuration_gemma3.Gemma3Config (Gemma3ForConditionalGeneration): hf_families._gemma3
    # refuses the whole model_type naming text_config; its keys (and a Gemma3TextConfig's, a
    # text config labelled gemma3) are listed so that this refusal, not a key's, is the one a
    # published config meets
    "gemma3": FamilyKeys(
        read=frozenset(),
        ignored=frozenset({
            "text_config", "vision_config", "mm_tokens_per_image", "boi_token_index",
            "eoi_token_index", "image_token_index", "tie_word_embeddings",
        }) | _GEMMA_READ | _GEMMA_IGNORED | {"sliding_window_pattern", "_sliding_window_pattern",
                                              "rope_local_base_freq",
                                              "use_bidirectional_attention"},
    ),  # fmt: skip
    # configuration_phi3.Phi3Config: hf_families._phi3 takes head_dim = hidden_size // heads,
    # so a head_dim key (modeling_phi3 reads it with getattr) is refused, not read;
    # original_max_position_embeddings picks LongRoPE's short or long factors (a rotary
    # scaling: no count); Phi3Attention builds no bias whatever attention_bias says
    # (Phi-3-mini's config.json holds attention_bias=false)
    "phi3": FamilyKeys(
        read=(_DECODER_READ - {"head_dim"}) | {"sliding_window", "partial_rotary_factor"},
        ignored=frozenset({"original_max_position_embeddings"}),
        fixed={"attention_bias": False},
    ),
    # configuration_deepseek_v3.DeepseekV3Config: __post_init__ overwrites head_dim
    # (= qk_rope_head_dim) and qk_head_dim (= nope + rope) from the qk_* keys (read);
    # DeepseekV3Attention's kv_b_proj makes a key and value per query head, so the reader takes
    # n_kv_heads = heads (num_key_value_heads only feeds the eager path's repeat_kv, 1 when
    # equal). Read by no code of modeling_deepseek_v3: num_nextn_predict_layers (attribute_map
    # num_mtp_layers; the multi-token-prediction module transformers does not build),
    # pretraining_tp, ep_size (expert parallelism of DeepSeek's own code). The routing keys of
    # DeepSeek's own code are fixed at what DeepseekV3TopkRouter always does (sigmoid scores,
    # noaux_tc: e_score_correction_bias). quantization_config (DeepSeek-V3's FP8 checkpoint):
    # how from_pretrained stores the weights; tgauge builds the class from the config
    # (tgauge/hf_models: architecture(cfg)), in the workload's dtype
    # rope_interleave: apply_rotary_pos_emb_interleave (the default) or apply_rotary_pos_emb
    "deepseek_v3": FamilyKeys(
        read=(_DECODER_READ - {"head_dim", "num_key_value_heads"}) | {
            "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank",
            "kv_lora_rank", "attention_bias", "first_k_dense_replace", "n_routed_experts",
            "n_shared_experts", "num_experts_per_tok", "moe_intermediate_size",
            "n_group", "topk_group", "norm_topk_prob",  # issue 22v: the router's saved sizes
        },
        ignored=(_ROUTING - {"n_group", "topk_group", "norm_topk_prob"}) | {
            "head_dim", "qk_head_dim", "num_key_value_heads", "num_nextn_predict_layers",
            "num_mtp_layers", "pretraining_tp", "ep_size", "quantization_config",
        },
        fixed={"moe_layer_freq": 1, "rope_interleave": True, "scoring_func": "sigmoid",
               "topk_method": "noaux_tc", **_MOE_FIXED},
    ),  # fmt: skip
    # configuration_gpt_neox.GPTNeoXConfig.convert_rope_params_to_dict: rotary_emb_base and
    # rotary_pct are the legacy names of rope_theta and partial_rotary_factor (all read);
    # is_decoder is a field no code of modeling_gpt_neox reads (fixed at its default)
    "gpt_neox": FamilyKeys(
        read=frozenset({
            "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings", "hidden_act", "layer_norm_eps",
            "attention_bias", "use_parallel_residual", "tie_word_embeddings", "rope_theta",
            "rope_parameters", "rope_scaling", "rotary_emb_base", "rotary_pct",
            "partial_rotary_factor",
        }),
        fixed={**_HIDDEN_DROPOUT, "is_decoder": False},
    ),  # fmt: skip
    # configuration_falcon.FalconConfig (n_embed: __post_init__'s legacy hidden_size); the
    # original RefinedWeb code's apply_residual_connection_post_layernorm is read by no code of
    # modeling_falcon: refused when True rather than dropped
    "falcon": FamilyKeys(
        read=frozenset({
            "num_hidden_layers", "hidden_size", "n_embed", "num_attention_heads",
            "num_kv_heads", "multi_query", "new_decoder_architecture", "parallel_attn",
            "num_ln_in_parallel_attn", "ffn_hidden_size", "vocab_size",
            "max_position_embeddings", "activation", "layer_norm_epsilon", "bias",
            "tie_word_embeddings", "rope_theta", "rope_parameters", "rope_scaling",
        }),
        fixed={"alibi": False, "apply_residual_connection_post_layernorm": False,
               **_HIDDEN_DROPOUT},
    ),  # fmt: skip
    # configuration_olmo2.Olmo2Config (modeling_olmo2 reads head_dim with getattr)
    "olmo2": FamilyKeys(read=_DECODER_READ | {"attention_bias"}),
})  # fmt: skip


def check_keys(cfg: dict[str, Any]) -> None:
    """UnsupportedError naming every key of ``cfg`` that its family neither reads nor ignores,
    and every fixed key holding another value. A model_type without a table is not checked
    here (its reader's own refusals apply)."""
    model_type = cfg.get("model_type")
    keys = FAMILY_KEYS.get(model_type) if isinstance(model_type, str) else None
    if keys is None:
        return
    fixed = {**COMMON_FIXED, **keys.fixed}
    for key, want in fixed.items():
        value = cfg.get(key, want)
        if value is not None and value != want:
            raise UnsupportedError(
                f"{key}={short_repr(value)} is not modelled for model_type={model_type!r} "
                f"(tgauge models {key}={want!r})"
            )
    known = keys.read | keys.ignored | COMMON_IGNORED | set(fixed)
    unknown = sorted(k for k in cfg if k not in known)
    if unknown:
        shown = ", ".join(f"{k}={short_repr(cfg[k])}" for k in unknown[:6])
        more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        raise UnsupportedError(
            f"config key{'s' if len(unknown) > 1 else ''} {shown}{more} "
            f"{'are' if len(unknown) > 1 else 'is'} not modelled for model_type="
            f"{model_type!r}: tgauge refuses a key it cannot tell changes no parameter, shape "
            "or saved tensor (estimator/spec/hf_keys.py)"
        )


def ignored_keys(model_type: Any) -> frozenset[str]:
    """The keys ``model_type``'s table ignores (no tensor depends on them): their values are
    not checked either (Qwen2MoeConfig.__post_init__ writes sliding_window=0 when
    use_sliding_window is False)."""
    keys = FAMILY_KEYS.get(model_type) if isinstance(model_type, str) else None
    return keys.ignored if keys is not None else frozenset()


#: the key naming the FFN's activation per family, and its default (configuration_<family>.py)
ACTIVATION_KEY: dict[str, tuple[str, str]] = {
    "gpt2": ("activation_function", "gelu_new"),
    "bert": ("hidden_act", "gelu"),
    "t5": ("feed_forward_proj", "relu"),
    "bart": ("activation_function", "gelu"),
    "vit": ("hidden_act", "gelu"),
    "llama": ("hidden_act", "silu"),
    "mistral": ("hidden_act", "silu"),
    # issue 22k: configuration_<family>.py of the issue-22 families
    "qwen2": ("hidden_act", "silu"),
    "qwen3": ("hidden_act", "silu"),
    "qwen2_moe": ("hidden_act", "silu"),
    "qwen3_moe": ("hidden_act", "silu"),
    "mixtral": ("hidden_act", "silu"),
    "gemma2": ("hidden_activation", "gelu_pytorch_tanh"),
    "gemma3_text": ("hidden_activation", "gelu_pytorch_tanh"),
    "phi3": ("hidden_act", "silu"),
    "deepseek_v3": ("hidden_act", "silu"),
    "gpt_neox": ("hidden_act", "gelu"),
    "falcon": ("activation", "gelu"),
    "olmo2": ("hidden_act", "silu"),
}
#: transformers/activations.py ACT2CLS entries tgauge models -> the [n, d_ff] tensors their
#: autograd nodes save (unique storages), derived from each definition:
#:   gelu, gelu_pytorch_tanh   nn.functional.gelu: its input
#:   silu, swish               nn.functional.silu / nn.SiLU: its input
#:   relu                      nn.ReLU: its output
#:   gelu_new, gelu_accurate   0.5 * x * (1 + tanh(c * (x + 0.044715 * pow(x, 3)))): pow saves
#:                             x, tanh its output, the last mul both factors -> 4
#:   gelu_python_tanh          x * 0.5 * (1 + tanh(...)): the same four
#:   gelu_fast                 0.5 * x * (1 + tanh(x * 0.79788 * (1 + 0.044715 * x * x))):
#:                             (0.044715 x) * x saves both, (x * 0.79788) * (1 + .) both,
#:                             tanh its output, the last mul both -> 7 (x counted once)
#:   gelu_python               x * 0.5 * (1 + erf(x / sqrt 2)): erf its input, the mul both -> 3
#:   quick_gelu                x * sigmoid(1.702 x): sigmoid its output, the mul x and it -> 2
#: The scalar muls and adds save nothing. Every other ACT2CLS entry is refused by name
#: (check_activation): gelu_10, hardswish, laplace, leaky_relu, linear, mish, relu2, relu6,
#: sigmoid, sqrtsoftplus, tanh, prelu and xielu (the last two with parameters of their own).
ACT_SAVES: dict[str, int] = {
    "gelu": 1, "gelu_pytorch_tanh": 1, "silu": 1, "swish": 1, "relu": 1,
    "gelu_new": 4, "gelu_accurate": 4, "gelu_python_tanh": 4, "gelu_fast": 7,
    "gelu_python": 3, "quick_gelu": 2,
}  # fmt: skip


def activation_fn(cfg: dict[str, Any]) -> str | None:
    """The ACT2FN name of the family's FFN activation (T5: feed_forward_proj without its
    ``gated-`` prefix; configuration_t5.T5Config makes ``gated-gelu`` gelu_new); None for a
    family without a table."""
    entry = ACTIVATION_KEY.get(cfg.get("model_type"))  # type: ignore[arg-type]
    if entry is None:
        return None
    key, default = entry
    name = cfg.get(key) or default
    if cfg.get("model_type") == "t5":
        name = "gelu_new" if name == "gated-gelu" else name.removeprefix("gated-")
    return name


def check_activation(cfg: dict[str, Any]) -> str | None:
    """The activation's ACT2FN name, or UnsupportedError naming it when its saved tensors
    are not derived here (``ACT_SAVES``)."""
    name = activation_fn(cfg)
    if name is None:
        return None
    model_type = cfg["model_type"]
    key = ACTIVATION_KEY[model_type][0]
    if name not in ACT_SAVES:
        raise UnsupportedError(
            f"{key}={short_repr(cfg.get(key))} is not modelled for model_type="
            f"{cfg['model_type']!r}: tgauge derives the saved tensors of "
            f"{', '.join(ACT_SAVES)} (transformers/activations.py)"
        )
    return name
