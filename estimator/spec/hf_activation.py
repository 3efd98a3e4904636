"""The activation of a Hugging Face config.json as a ModelSpec activation, and the refusal of a
key at a value tgauge does not model (estimator/spec/hf_config.py and
estimator/spec/hf_families.py read them the same way)."""

from __future__ import annotations

from typing import Any

from estimator.spec.errors import UnsupportedError
from estimator.spec.files import short_repr

Config = dict[str, Any]

GELU_NAMES = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python", "gelu_accurate")


def activation(cfg: Config, key: str, gated: bool = False) -> str:
    act = cfg.get(key, "gelu")
    if act in GELU_NAMES:
        return "geglu" if gated else "gelu"
    if act == "relu" and not gated:
        return "relu"
    if act in ("silu", "swish") and gated:
        return "swiglu"
    raise UnsupportedError(
        f"{key}={short_repr(act)} is not modelled for model_type="
        f"{cfg['model_type']!r}{' (gated FFN)' if gated else ''}; tgauge "
        "knows relu and gelu FFNs and swiglu / geglu gated FFNs"
    )


def reject(cfg: Config, key: str, default: Any, why: str) -> None:
    """UnsupportedError when ``cfg[key]`` differs from the one value tgauge models."""
    value = cfg.get(key, default)
    if value != default:
        raise UnsupportedError(
            f"{key}={short_repr(value)} is not modelled for model_type="
            f"{cfg['model_type']!r}: {why} (expected {default!r})"
        )
