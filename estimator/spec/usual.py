"""How a model is usually run: the settings a Workload leaves unset are resolved from these.

A ModelSpec carries its ``usual`` settings (a preset: estimator/spec/presets.py; a Hugging Face
config.json: ``hf_usual_settings`` below, what transformers does with the config when nobody
says otherwise). ``estimator.spec.workload.resolved_defaults`` fills the fields a Workload left
out from them, and the Estimate names each value it filled (``defaults_applied``), so the
library and the CLI answer the same for the same arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from estimator.spec.dtypes import DType

Config = dict[str, Any]


class UsualSettings(BaseModel):
    """How a model is usually run. Not part of the architecture: the Workload fields a user
    leaves out are filled from these (``resolved_defaults``); a given value is never
    overwritten. ``source`` says where each value comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: DType = "fp32"
    train_dtype: DType = "fp32"
    train_master_weights: bool = False
    attention_impl: Literal["eager", "fused"] = "eager"
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="training: dropout probability")
    source: str
    # the CLI's --engine default (tgauge/options.py default_engine); resolved_defaults does
    # not fill Workload.engine from it: the library keeps the plain forward unless told
    decode_engine: Literal["hf-generate"] | None = Field(
        None,
        description="decode: the code that usually serves the model (Workload.engine), None "
        "for the Workload's default (the plain forward)",
    )


#: torch_dtype (or transformers 5's ``dtype``) of a config.json -> Workload.dtype
_CONFIG_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

#: model_type -> whether its transformers class supports sdpa (``_supports_sdpa = True`` on
#: the PreTrainedModel of transformers/models/<type>/modeling_<type>.py, transformers 5.24):
#: PreTrainedModel._check_and_adjust_attn_implementation (modeling_utils.py) then picks sdpa
#: when no attn_implementation is given, else eager.
SDPA_SUPPORT: dict[str, bool] = {
    "gpt2": True,
    "bert": True,
    "t5": True,
    "bart": True,
    "vit": True,
    "llama": True,
    "mistral": True,
}

#: model_type -> its config's dropout probabilities (those tgauge.hf_models.DROPOUT_FIELDS sets
#: when measuring) and the config class's default for each (transformers/models/<type>/
#: configuration_<type>.py, transformers 5.24): a config.json that leaves one out gets it.
DROPOUT_DEFAULTS: dict[str, dict[str, float]] = {
    "gpt2": {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1},
    "bert": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "t5": {"dropout_rate": 0.1},
    "bart": {"dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0},
    "vit": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "llama": {"attention_dropout": 0.0},
    "mistral": {"attention_dropout": 0.0},
}


def _config_dtype(cfg: Config) -> tuple[DType, str]:
    """The dtype from_pretrained loads the weights in (its default ``dtype="auto"`` reads the
    config's ``dtype``, or the older ``torch_dtype``: transformers modeling_utils.py
    from_pretrained), fp32 when the config names none."""
    for key in ("dtype", "torch_dtype"):
        value = cfg.get(key)
        if isinstance(value, str) and value in _CONFIG_DTYPES:
            return _CONFIG_DTYPES[value], f"{key} {value}"  # type: ignore[return-value]
    return "fp32", "no torch_dtype: fp32"


def _config_dropout(cfg: Config, model_type: str) -> tuple[float, str]:
    """The one dropout probability of the config's sites (absent fields: the config class's
    default). Sites that differ cannot be one Workload.dropout: 0 and a source saying so."""
    defaults = DROPOUT_DEFAULTS.get(model_type)
    if defaults is None:
        return 0.0, f"dropout: {model_type} not in tgauge's table, 0"
    values = {key: cfg.get(key, default) for key, default in defaults.items()}
    values = {k: float(v) if isinstance(v, (int, float)) else 0.0 for k, v in values.items()}
    shown = ", ".join(f"{k} {v:g}" for k, v in values.items())
    if len(set(values.values())) > 1:
        return 0.0, f"dropout 0: its sites differ ({shown}), give dropout to set one for all"
    return next(iter(values.values())), shown


def hf_usual_settings(cfg: Config, model_type: str, decoder_lm: bool = False) -> UsualSettings:
    """How transformers runs a config.json when nothing else is said: the weights in its
    torch_dtype (training as loaded, no master copy), its class's default attention (sdpa ->
    tgauge's fused), in training its dropout probabilities, and a decoder-only LM's
    (``decoder_lm``) decode served by generate() (generation/utils.py
    GenerationMixin.generate; issue 19)."""
    dtype, dtype_source = _config_dtype(cfg)
    sdpa = SDPA_SUPPORT.get(model_type, False)
    dropout, dropout_source = _config_dropout(cfg, model_type)
    attention = "sdpa (transformers' default for the class)" if sdpa else "eager"
    return UsualSettings(
        dtype=dtype,
        train_dtype=dtype,
        attention_impl="fused" if sdpa else "eager",
        dropout=dropout,
        source=f"config.json: {dtype_source}; attention {attention}; {dropout_source}",
        decode_engine="hf-generate" if decoder_lm else None,
    )


def usual_fields(usual: UsualSettings, mode: str, given: set[str]) -> dict[str, Any]:
    """The Workload fields ``usual`` sets for ``mode`` among those not in ``given``."""
    out: dict[str, Any] = {}
    training = mode == "train"
    if "dtype" not in given and "autocast" not in given:  # autocast runs on fp32 weights
        out["dtype"] = usual.train_dtype if training else usual.dtype
        if training and usual.train_master_weights and "master_weights" not in given:
            out["master_weights"] = True
    if "attention_impl" not in given:
        out["attention_impl"] = usual.attention_impl
    if training and "dropout" not in given:
        out["dropout"] = usual.dropout
    return out
