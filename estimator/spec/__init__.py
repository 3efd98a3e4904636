"""What the user describes: the architecture (ModelSpec), what runs on it (Workload), and the
readers that make them from presets, Hugging Face config.json files and spec files.

Everything above this package (shapes, rules, terms, replay, plan) reads these types; nothing
here imports the rest of the estimator. The heavy readers (presets, hf_config, hf_twins,
files) load on first use.
"""

from __future__ import annotations

from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import (
    MAX_NEW_TOKENS,
    Workload,
    check_compatible,
    context_limit,
    context_limit_text,
    revalidated,
)

__all__ = [
    "MAX_NEW_TOKENS",
    "ModelSpec",
    "SpecError",
    "UnsupportedError",
    "Workload",
    "check_compatible",
    "context_limit",
    "context_limit_text",
    "revalidated",
]
