"""ViT (models/vit/modeling_vit.py, transformers 5.x): ViTEmbeddings.forward adds the position
table to the patches itself (no ids saved); the no-grad forward is the reference's but for the
probabilities' lifetime (``ViTPass``); everything else is the reference model's rule.
"""

from __future__ import annotations

from estimator.rules.hf.common import positions_from_buffer
from estimator.rules.reference.passes import Pass
from estimator.rules.registry import register

VIT = ("ViTModel", "ViTForImageClassification")

register("saved.positions", *VIT)(positions_from_buffer)


@register("replay.pass", *VIT)
class ViTPass(Pass):
    """ViTLayer.forward: ``hidden_states, _ = self.attention(...)``: eager attention returns
    its probabilities as attn_weights and the local ``_`` keeps them through layernorm_after
    and the MLP until the layer returns (sdpa returns None)."""

    probs = 0

    def softmax_mix(
        self, scores: int, bias: int, mask: int, v_copy: int, out: int, reps: int
    ) -> None:
        super().softmax_mix(scores, bias, mask, v_copy, out, reps)
        self.probs += self.live.take(scores)  # the probabilities, not freed: held by ``_``

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        super().layer(stack, s, start, cross_s, cache)
        self.live.drop(self.probs)
        self.probs = 0
