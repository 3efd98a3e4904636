"""ViT (models/vit/modeling_vit.py, transformers 5.x): ViTEmbeddings.forward adds the position
table to the patches itself (no ids saved); everything else is the reference model's rule.
"""

from __future__ import annotations

from estimator.rules.hf.common import positions_from_buffer
from estimator.rules.registry import register

VIT = ("ViTModel", "ViTForImageClassification")

register("saved.positions", *VIT)(positions_from_buffer)
