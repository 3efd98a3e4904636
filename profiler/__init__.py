"""Measure any nn.Module: parameters, saved activations, live memory, FLOPs, time, KV cache.

Results use the glossary's term names (docs/glossary.md) and ``estimator.breakdown.Breakdown``.
Importing this package is cheap: torch, fvcore and pynvml load when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "term_name": "profiler.naming",
    "measure_params": "profiler.params",
    "param_bytes": "profiler.params",
    "grad_bytes": "profiler.params",
    "optimizer_bytes": "profiler.params",
    "cache_nbytes": "profiler.kv",
    "measure_decode": "profiler.kv",
    "time_fn": "profiler.timing",
    "measure_saved": "profiler.saved",
    "count_flops": "profiler.flops",
    "fvcore_flops": "profiler.flops",
    "LiveMemoryTracker": "profiler.live",
    "profile_train_step": "profiler.run",
    "profile_forward": "profiler.run",
    "profile_decode": "profiler.run",
    "inference_tracker": "profiler.run",
    "HFDecoder": "profiler.run",
    "Measured": "profiler.results",
    "TrainProfile": "profiler.results",
    "ForwardProfile": "profiler.results",
    "DecodeProfile": "profiler.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")
