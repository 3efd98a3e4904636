"""tgauge's analytic estimator: parameters, memory, KV cache and FLOPs of a Transformer.

Pure Python + pydantic; never imports torch. Heavy parts load on first use.
"""

from __future__ import annotations

from typing import Any

from estimator.breakdown import Breakdown, Estimate
from estimator.dtypes import nbytes
from estimator.estimate import estimate  # binds the function over the submodule's name
from estimator.spec import ModelSpec, SpecError, UnsupportedError, Workload

__all__ = [
    "Breakdown",
    "Estimate",
    "ModelSpec",
    "PRESETS",
    "SpecError",
    "UnsupportedError",
    "Workload",
    "estimate",
    "get_preset",
    "nbytes",
]

_LAZY = {
    "PRESETS": "estimator.presets",
    "get_preset": "estimator.presets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'estimator' has no attribute {name!r}")
