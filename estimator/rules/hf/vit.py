"""ViT (models/vit/modeling_vit.py, transformers 5.x): ViTEmbeddings.forward adds the position
table to the patches itself (no ids saved); the no-grad forward is the reference's but for the
probabilities' lifetime (``ViTPass``); everything else is the reference model's rule.
"""

from __future__ import annotations

from estimator.rules.hf.common import positions_from_buffer
from estimator.rules.hf.precision import softmax_converts_input
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

    def self_attention(self, s: int, start: int, stack: str, q: int, cache) -> int:
        """ViTSelfAttention.forward: the key and value projections (q taken by the caller),
        no positions and no mask (ViTModel's create_bidirectional_mask is None without an
        attention mask); -> the attention core's output."""
        kv = self.act(s, self.spec.n_heads * self.spec.head_dim)
        self.live.take(kv, kv)
        o = self.attend(s, s, 0, 0)
        self.live.drop(kv, kv)
        return o

    def attend(self, s_q: int, s_k: int, mask_bytes: int, bias: int) -> int:
        """eager_attention_forward's matmuls fold q, k^T and v [b, h, s, d_h] (transposed
        views of the projections [b, s, h, d_h]) into [b * h, s, d_h]: a contiguous copy
        when b and h are both > 1, a view when either is 1 (a size-1 dimension merges with
        any stride); sdpa: the reference's flash kernel."""
        if self.sh.attention_impl != "eager":
            return super().attend(s_q, s_k, mask_bytes, bias)
        live, spec, b = self.live, self.spec, self.b
        h, d_h, cb = spec.n_heads, spec.head_dim, self.cb
        out = b * h * s_q * d_h * cb
        copy = out if b > 1 and h > 1 else 0
        q_copy, k_copy = live.take(copy), live.take(copy)
        scores = b * h * s_q * s_k * cb
        live.take(scores)  # bmm
        live.drop(q_copy, k_copy)
        self.softmax_mix(scores, 0, 0, copy, out, 0)
        return out

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
            s32 = scores * FP32_BYTES // self.cb
            converted = live.take(s32) if softmax_converts_input(self.sh) else 0
            live.take(s32)  # softmax in fp32
            live.drop(converted)
            live.take(scores)  # .to(query.dtype); the scores go as attn_weights is rebound
            live.drop(scores, s32)
        else:
            live.take(scores)  # softmax
            live.drop(scores)
        live.take(v_copy)  # matmul: v made contiguous
        live.take(out)  # bmm: probs @ v
        live.drop(v_copy, reps)
        self.probs += scores  # the probabilities, not freed: held by ``_``

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        """ViTEmbeddings.forward: ``embeddings + self.position_embeddings`` (a parameter
        [1, s, d] added whole: no ids, no rows gathered) is a new [b, s, d], and the cat
        output (the caller's) goes as ``embeddings`` is rebound. ViTModel.forward keeps its
        ``embedding_output`` to its end; its loop rebinds ``hidden_states`` to each layer's
        output (the previous one freed, the embedding output kept); then the final
        layernorm. -> its output (the model's locals dropped as it returns)."""
        live, nd = self.live, self.act(s, self.spec.d_model)
        live.take(nd)  # + position_embeddings
        live.drop(nd)  # the cat output
        n_layers = dict(self.spec.stacks)[stack]
        for i in range(n_layers):
            self.layer(stack, s, start, cross_s, cache)  # +nd: its output
            if i:
                live.drop(nd)  # the previous layer's output
        y = self.norm(s) if self.spec.final_norm else 0
        if y:
            live.drop(nd, nd if n_layers else 0)  # embedding_output, hidden_states
            return y
        if n_layers:
            live.drop(nd)  # embedding_output
        return nd

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        super().layer(stack, s, start, cross_s, cache)
        self.live.drop(self.probs)
        self.probs = 0
