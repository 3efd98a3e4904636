"""The Hugging Face implementation's rules (``ModelSpec.implementation == "hf"``), registered
per module kind in estimator/implementations.py: only where transformers' code saves,
allocates or caches differently from our reference model. Each rule names the code it
mirrors (transformers 5.x, modeling_<family>.py); measured in tests/tgauge/test_validate_hf.py.
"""

from __future__ import annotations

from estimator.implementations import register
from estimator.spec import ModelSpec, Workload


@register("saved.eager_mask", "hf")
def eager_mask_saved(spec: ModelSpec, workload: Workload, entries: int, masked: bool) -> int:
    """HF builds one additive float mask per forward (masking_utils.create_causal_mask) and
    eager attention adds it to the scores (``attn_weights + causal_mask``): an add saves
    nothing, so no layer keeps a mask."""
    return 0
