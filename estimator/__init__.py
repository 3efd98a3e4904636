"""tgauge's analytic estimator: parameters, memory, KV cache and FLOPs of a Transformer.

Pure Python + pydantic; never imports torch. Heavy parts load on first use. The parts, lowest
first (docs/architecture.md): ``spec`` (what the user describes), ``shapes`` (the run resolved
once), ``rules`` (what each implementation does, per module kind), ``terms`` (the named
quantities), ``replay`` (what is live when: the peak), ``estimate`` (all of it, typed),
``compiled`` (the same, compiled once per structure), ``plan`` (the inverse questions).
"""

from __future__ import annotations

from typing import Any

from estimator.breakdown import Breakdown, Estimate
from estimator.estimate import (
    check_supported,
    estimate,  # binds the function over the submodule's name
)
from estimator.spec.dtypes import nbytes
from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload

__all__ = [
    "Breakdown",
    "Estimate",
    "ModelSpec",
    "PRESETS",
    "SpecError",
    "UnsupportedError",
    "Workload",
    "check_supported",
    "estimate",
    "get_preset",
    "nbytes",
]

_LAZY = {
    "PRESETS": "estimator.spec.presets",
    "get_preset": "estimator.spec.presets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'estimator' has no attribute {name!r}")
