"""ViT (models/vit/modeling_vit.py, transformers 5.x): ViTEmbeddings.forward adds the position
table to the patches itself (no ids saved); the no-grad forward is the reference's but for the
probabilities' lifetime (``ViTPass``); everything else is the reference model's rule.
"""

from __future__ import annotations

from estimator.rules.hf.common import positions_from_buffer
from estimator.rules.reference.passes import FP32_BYTES, Pass
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
        """eager_attention_forward after q @ k^T (no bias, no mask): * scaling,
        ``softmax(dtype=float32).to(query.dtype)`` (an fp32 output, then the low copy, in a
        low model dtype), probs @ v (matmul's copy of v); the probabilities stay."""
        live = self.live
        live.take(scores)  # * scaling
        live.drop(scores)
        if self.cb != FP32_BYTES:
            s32 = live.take(scores * FP32_BYTES // self.cb)  # softmax in fp32
            live.drop(scores)
            live.take(scores)  # .to(query.dtype)
            live.drop(s32)
        else:
            live.take(scores)  # softmax
            live.drop(scores)
        live.take(v_copy)  # matmul: v made contiguous
        live.take(out)  # bmm: probs @ v
        live.drop(v_copy, reps)
        self.probs += scores  # the probabilities, not freed: held by ``_``

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        super().layer(stack, s, start, cross_s, cache)
        self.live.drop(self.probs)
        self.probs = 0
