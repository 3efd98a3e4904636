"""Which config.json keys each Hugging Face family models, which change no tensor, and which
tgauge refuses: a key that changes parameters, shapes or saved tensors is read by the family's
reader (estimator/spec/hf_config.py) or refused here by name, never dropped without a word.

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


#: the key naming the FFN's activation per family, and its default (configuration_<family>.py)
ACTIVATION_KEY: dict[str, tuple[str, str]] = {
    "gpt2": ("activation_function", "gelu_new"),
    "bert": ("hidden_act", "gelu"),
    "t5": ("feed_forward_proj", "relu"),
    "bart": ("activation_function", "gelu"),
    "vit": ("hidden_act", "gelu"),
    "llama": ("hidden_act", "silu"),
    "mistral": ("hidden_act", "silu"),
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
