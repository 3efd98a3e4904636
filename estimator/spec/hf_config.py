"""ModelSpec from a Hugging Face config.json (gpt2, bert, t5, bart, vit, llama, mistral; the
families of issue 22 in estimator/spec/hf_families.py).

Reads plain JSON; never imports transformers. The spec describes the Hugging Face
implementation (``implementation="hf"``) of one class, recorded in ``hf_architecture``: the
class ``architectures`` names when it is modelled (ARCHITECTURES), else the family's default:
  gpt2 -> GPT2LMHeadModel, bert -> BertModel (with pooler, no MLM head) or BertForMaskedLM
  (MLM head: dense + act + LayerNorm, tied decoder with a bias; no pooler), t5 ->
  T5ForConditionalGeneration, bart -> BartForConditionalGeneration, vit -> ViTModel (with
  pooler), llama / mistral -> LlamaForCausalLM / MistralForCausalLM. Classifier heads
  (n_labels from id2label, else num_labels; single-label only): BertForSequenceClassification
  (BertModel with its pooler, classifier on the pooled output) and ViTForImageClassification
  (no pooler, classifier on the class token).
A config field combination tgauge does not model raises UnsupportedError naming the field;
an unknown model_type raises SpecError. Rotary scaling (``rope_type`` other than default)
changes no parameter, FLOP or byte count and is read as plain rotary with the given theta.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from estimator.spec import hf_families
from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.files import read_text, short_repr
from estimator.spec.hf_activation import activation as _activation  # shared with hf_families
from estimator.spec.hf_activation import reject as _reject
from estimator.spec.hf_keys import check_activation, check_keys, ignored_keys
from estimator.spec.usual import hf_usual_settings

Config = dict[str, Any]


def _gpt2(cfg: Config) -> dict[str, Any]:
    _reject(cfg, "add_cross_attention", False, "GPT-2 with cross-attention")
    d = cfg["n_embd"]
    return dict(
        arch="decoder", n_decoder_layers=cfg["n_layer"], d_model=d, n_heads=cfg["n_head"],
        d_ff=cfg.get("n_inner") or 4 * d, vocab_size=cfg["vocab_size"],
        max_seq_len=cfg["n_positions"], activation=_activation(cfg, "activation_function"),
        activation_fn=cfg.get("activation_function", "gelu_new"), fused_qkv=True,
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5), position="learned",
        tie_embeddings=cfg.get("tie_word_embeddings", True),
    )  # fmt: skip


def _bert(cfg: Config) -> dict[str, Any]:
    _reject(cfg, "position_embedding_type", "absolute", "only absolute positions are modelled")
    _reject(cfg, "is_decoder", False, "BERT as a decoder")
    _reject(cfg, "add_cross_attention", False, "BERT with cross-attention")
    return dict(
        arch="encoder", n_encoder_layers=cfg["num_hidden_layers"], d_model=cfg["hidden_size"],
        n_heads=cfg["num_attention_heads"], d_ff=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"], max_seq_len=cfg["max_position_embeddings"],
        activation=_activation(cfg, "hidden_act"), norm_position="post",
        norm_eps=cfg.get("layer_norm_eps", 1e-12), final_norm=False, embed_norm=True,
        n_token_types=cfg.get("type_vocab_size", 2), pooler=True, lm_head=False,
        position="learned",
    )  # fmt: skip


def _t5(cfg: Config) -> dict[str, Any]:
    proj = cfg.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = _activation({**cfg, "feed_forward_proj": proj.removeprefix("gated-")},
                      "feed_forward_proj", gated)  # fmt: skip
    n_enc = cfg["num_layers"]
    return dict(
        arch="encoder-decoder", n_encoder_layers=n_enc,
        n_decoder_layers=cfg.get("num_decoder_layers") or n_enc, d_model=cfg["d_model"],
        n_heads=cfg["num_heads"], head_dim=cfg["d_kv"], d_ff=cfg["d_ff"],
        vocab_size=cfg["vocab_size"], max_seq_len=cfg.get("n_positions", 512), activation=act,
        norm="rmsnorm", norm_eps=cfg.get("layer_norm_epsilon", 1e-6), bias=False,
        tie_embeddings=cfg.get("tie_word_embeddings", True), position="relative",
        relative_buckets=cfg.get("relative_attention_num_buckets", 32),
        relative_max_distance=cfg.get("relative_attention_max_distance", 128),
    )  # fmt: skip


def _bart(cfg: Config) -> dict[str, Any]:
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"),
                     ("encoder_ffn_dim", "decoder_ffn_dim")):  # fmt: skip
        if cfg[enc] != cfg[dec]:
            raise UnsupportedError(
                f"{dec}={short_repr(cfg[dec])} differs from {enc}={short_repr(cfg[enc])}: "
                "tgauge models one n_heads and d_ff for both stacks"
            )
    _reject(cfg, "normalize_before", False, "BART is post-norm")
    _reject(cfg, "add_final_layer_norm", False, "BART has no final norm")
    return dict(
        arch="encoder-decoder", n_encoder_layers=cfg["encoder_layers"],
        n_decoder_layers=cfg["decoder_layers"], d_model=cfg["d_model"],
        n_heads=cfg["encoder_attention_heads"], d_ff=cfg["encoder_ffn_dim"],
        vocab_size=cfg["vocab_size"], max_seq_len=cfg["max_position_embeddings"],
        activation=_activation(cfg, "activation_function"), norm_position="post",
        final_norm=False, embed_norm=True, position="learned", position_offset=2,
        tie_embeddings=cfg.get("tie_word_embeddings", True),
    )  # fmt: skip


def _vit(cfg: Config) -> dict[str, Any]:
    d = cfg["hidden_size"]
    _reject(cfg, "qkv_bias", True, "ViT without attention biases")
    _reject(cfg, "pooler_output_size", d, "the pooler maps d_model -> d_model")
    _reject(cfg, "pooler_act", "tanh", "the pooler uses tanh")
    n_positions = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
    return dict(
        arch="encoder", n_encoder_layers=cfg["num_hidden_layers"], d_model=d,
        n_heads=cfg["num_attention_heads"], d_ff=cfg["intermediate_size"],
        max_seq_len=n_positions, activation=_activation(cfg, "hidden_act"),
        norm_eps=cfg.get("layer_norm_eps", 1e-12), pooler=True, lm_head=False,
        position="learned", image_size=cfg["image_size"], patch_size=cfg["patch_size"],
        n_channels=cfg.get("num_channels", 3),
    )  # fmt: skip


def _rope_theta(cfg: Config) -> float:
    rope = cfg.get("rope_parameters") or {}  # transformers 5; 4.x keeps rope_theta on top
    return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _llama(cfg: Config) -> dict[str, Any]:
    attn_bias, mlp_bias = cfg.get("attention_bias", False), cfg.get("mlp_bias", False)
    if attn_bias != mlp_bias:
        raise UnsupportedError(
            f"attention_bias={short_repr(attn_bias)} with mlp_bias={short_repr(mlp_bias)}: "
            "tgauge models one bias flag for attention and FFN linears"
        )
    n_heads = cfg["num_attention_heads"]
    return dict(
        arch="decoder", n_decoder_layers=cfg["num_hidden_layers"], d_model=cfg["hidden_size"],
        n_heads=n_heads, n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
        d_ff=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
        max_seq_len=cfg["max_position_embeddings"],
        activation=_activation(cfg, "hidden_act", gated=True), norm="rmsnorm",
        norm_eps=cfg.get("rms_norm_eps", 1e-6), bias=attn_bias,
        tie_embeddings=cfg.get("tie_word_embeddings", False), position="rotary",
        rope_theta=_rope_theta(cfg), sliding_window=cfg.get("sliding_window"),
    )  # fmt: skip


READERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "gpt2": _gpt2,
    "bert": _bert,
    "t5": _t5,
    "bart": _bart,
    "vit": _vit,
    "llama": _llama,
    "mistral": _llama,
}


#: family -> the class its spec describes when ``architectures`` names none modelled
DEFAULT_ARCHITECTURE = {
    "gpt2": "GPT2LMHeadModel",
    "bert": "BertModel",
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
    "vit": "ViTModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
}
# issue 22: the families estimator/spec/hf_families.py reads
READERS.update(hf_families.READERS)
DEFAULT_ARCHITECTURE.update(hf_families.DEFAULT_ARCHITECTURE)
#: modelled classes -> the spec fields their head changes from the family reader's
ARCHITECTURES: dict[str, dict[str, Any]] = {
    **{name: {} for name in DEFAULT_ARCHITECTURE.values()},
    # BertOnlyMLMHead: transform (dense d->d, act, LayerNorm), decoder tied to the word
    # embeddings with its own bias [V]; BertForMaskedLM builds BertModel without the pooler
    "BertForMaskedLM": dict(pooler=False, lm_head=True, head_transform=True, lm_head_bias=True),
    # BertForSequenceClassification: dropout + classifier Linear(d, num_labels) on the pooler
    # output; ViTForImageClassification: ViTModel without the pooler, classifier on x[:, 0]
    "BertForSequenceClassification": dict(pooler=True, lm_head=False),
    "ViTForImageClassification": dict(pooler=False),
}
#: classes with a classifier head (num_labels outputs, cross-entropy over them)
CLASSIFIERS = frozenset({"BertForSequenceClassification", "ViTForImageClassification"})


def _n_labels(cfg: Config) -> int:
    """num_labels as transformers reads it: the size of id2label when given, else num_labels
    (default 2); single-label classification only (cross-entropy over the labels)."""
    problem = cfg.get("problem_type")
    if problem not in (None, "single_label_classification"):
        raise UnsupportedError(
            f"problem_type={short_repr(problem)} is not modelled: single-label classification"
        )
    labels = cfg.get("id2label")
    n = len(labels) if isinstance(labels, dict) and labels else cfg.get("num_labels", 2)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise UnsupportedError(
            f"num_labels={short_repr(n)} is not modelled: a classifier over >= 2 labels "
            "(1 label is regression)"
        )
    return n


def _architecture(cfg: Config, model_type: str) -> str:
    """The first class of ``architectures`` that is modelled for this family, else the
    family's default class."""
    family_default = DEFAULT_ARCHITECTURE[model_type]
    prefix = family_default[: len(model_type)]  # GPT2, Bert, T5, Bart, ViT, Llama, Mistral
    for name in cfg.get("architectures") or ():
        if name in ARCHITECTURES and name.startswith(prefix):
            return name
    return family_default


def _read(path: str | Path) -> Config:
    from estimator.spec.files import parse_json

    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    data = parse_json(read_text(path), f"config={str(path)!r}")
    if not isinstance(data, dict):
        raise SpecError(f"config={str(path)!r} must hold a JSON object")
    return data


#: config keys read as counts: an int (not a bool, not a string), > 0 (>= 0 where marked)
_COUNTS = frozenset({
    "n_embd", "n_layer", "n_head", "n_inner", "vocab_size", "n_positions", "num_hidden_layers",
    "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings",
    "num_layers", "num_decoder_layers", "d_model", "num_heads", "d_kv", "d_ff",
    "relative_attention_num_buckets", "relative_attention_max_distance", "encoder_layers",
    "decoder_layers", "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
    "decoder_ffn_dim", "image_size", "patch_size", "num_channels", "num_key_value_heads",
    "head_dim", "sliding_window",
})  # fmt: skip
_MAY_BE_ZERO = frozenset({"type_vocab_size"})
_REALS = frozenset({"layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps", "rope_theta"})
_WORDS = frozenset({"activation_function", "hidden_act", "feed_forward_proj"})


def _check_values(cfg: Config) -> None:
    """SpecError for a config value of the wrong type or sign, before any arithmetic on it
    (``"n_embd": "768"`` would otherwise be multiplied as a string)."""
    skip = ignored_keys(cfg.get("model_type"))  # issue 22k: a key no tensor depends on
    for key, value in cfg.items():
        if value is None or key in skip:
            continue
        shown = f"{key}={short_repr(value)} is invalid"
        if key in _COUNTS or key in _MAY_BE_ZERO:
            low = 0 if key in _MAY_BE_ZERO else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(f"{shown}: an integer >= {low}")
        elif key in _REALS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"{shown}: a number > 0")
            if not (math.isfinite(value) and value > 0):
                raise SpecError(f"{shown}: a finite number > 0")
        elif key in _WORDS and not isinstance(value, str):
            raise SpecError(f"{shown}: a string")
        elif key == "rope_parameters" and not isinstance(value, dict):
            raise SpecError(f"{shown}: a mapping (rope_theta, rope_type, ...)")
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None:
        _check_values({"rope_theta": theta})


def hf_spec_fields(path_or_dict: str | Path | Config) -> dict[str, Any]:
    """The ModelSpec fields of a config dict, a config.json path or the folder holding it
    (``ModelSpec.from_hf_config`` builds the spec from them)."""
    cfg = path_or_dict if isinstance(path_or_dict, dict) else _read(path_or_dict)
    model_type = cfg.get("model_type")
    reader = READERS.get(model_type) if isinstance(model_type, str) else None
    if reader is None:
        raise SpecError(f"model_type={short_repr(model_type)} is unknown; tgauge reads "
                        f"{', '.join(READERS)}")  # fmt: skip
    _check_values(cfg)
    check_keys(cfg)  # every key modelled, ignored with a reason, or refused by name
    try:
        fields = reader(cfg)
    except KeyError as exc:
        raise SpecError(f"config field {exc.args[0]!r} is missing for "
                        f"model_type={model_type!r}") from None  # fmt: skip
    except (TypeError, ArithmeticError, AttributeError) as exc:  # a type _check_values missed
        raise SpecError(f"config for model_type={model_type!r} holds a value of the wrong "
                        f"type: {short_repr(str(exc))}") from None  # fmt: skip
    fields.setdefault("activation_fn", check_activation(cfg))
    name = cfg.get("_name_or_path") or model_type
    architecture = _architecture(cfg, model_type)
    if model_type == "bert" and architecture != "BertModel":  # the head decides the tying
        fields["tie_embeddings"] = cfg.get("tie_word_embeddings", True)
    fields.update(ARCHITECTURES[architecture])
    if architecture in CLASSIFIERS:
        fields["n_labels"] = _n_labels(cfg)
    decoder_lm = fields["arch"] == "decoder" and fields.get("lm_head") is not False
    usual = hf_usual_settings(cfg, model_type, decoder_lm)  # issue 23: how transformers runs it
    return {"name": name, "implementation": "hf", "hf_architecture": architecture, **fields,
            "usual": usual}  # fmt: skip
