"""A readable PyTorch Transformer built from an estimator.ModelSpec.

One nn.Module per concept of "Attention Is All You Need" (Vaswani et al. 2017); module paths
follow docs/glossary.md, so every term the estimator predicts has a module the profiler can
measure. Imports torch; the estimator never imports this package.
"""

from __future__ import annotations

from reference_model.cache import KVCache
from reference_model.model import ModelOutput, Transformer, build_model

__all__ = ["KVCache", "ModelOutput", "Transformer", "build_model"]
