"""Positional information: one module per stack (``{stack}.pos`` in docs/glossary.md).

Sinusoidal and learned positions are added to the embeddings; rotary (Su et al. 2021) and
relative (T5, Raffel et al. 2020) positions are called from the attention of every layer, with
the absolute positions of queries and keys, so a decode step sees the right positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from estimator.spec import ModelSpec


class SinusoidalPositions(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Vaswani et al. 3.5)."""

    def __init__(self, n_positions: int, d: int) -> None:
        super().__init__()
        pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # [n, 1]
        inv_freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(1e4) / d))
        table = torch.zeros(n_positions, d)
        table[:, 0::2] = torch.sin(pos * inv_freq)  # [n, ceil(d/2)]
        table[:, 1::2] = torch.cos(pos * inv_freq)[:, : d // 2]  # [n, floor(d/2)]
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]  # [s] -> [s, d]


class LearnedPositions(nn.Embedding):
    """A learned table of n_positions + offset rows; position p reads row p + offset (BART: 2)."""

    def __init__(self, n_positions: int, d: int, offset: int = 0) -> None:
        super().__init__(n_positions + offset, d)
        self.offset = offset

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return super().forward(positions + self.offset)  # [s] -> [s, d]


class RotaryPositions(nn.Module):
    """Rotary embedding, rotate-half layout (GPT-NeoX / Llama): pairs (x_i, x_{i+d_h/2});
    partial rotary (``rotary_dim`` r < d_h, issue 22p: GPT-NeoX, Phi-3) rotates the first r
    dims of each head by r's angles and passes the others: cat([rotate(x[..., :r]),
    x[..., r:]])."""

    def __init__(self, head_dim: int, theta: float, rotary_dim: int | None = None) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.rotary_dim = head_dim if rotary_dim is None else rotary_dim

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [b, h, s, d_h] rotated by the angles of ``positions`` [s]."""
        r = self.rotary_dim
        if r == self.head_dim:
            return self.rotate(x, positions)
        rotated = self.rotate(x[..., :r], positions)  # [b, h, s, r]
        return torch.cat([rotated, x[..., r:]], dim=-1)  # -> [b, h, s, d_h]

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [.., s, d] (d = r) rotated by the angles of ``positions`` [s]."""
        d_h = x.shape[-1]
        inv_freq = self.theta ** (
            -torch.arange(0, d_h, 2, dtype=torch.float32, device=x.device) / d_h
        )  # [d_h/2]
        angles = positions.float()[:, None] * inv_freq[None, :]  # [s, d_h/2]
        angles = torch.cat([angles, angles], dim=-1)  # [s, d_h]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # 2 x [b, h, s, d_h/2]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RelativePositionBias(nn.Module):
    """T5 relative attention bias: a learned scalar per head and log-spaced distance bucket.

    Bidirectional (encoder) buckets split into keys before/after the query; causal (decoder)
    buckets only see keys at or before it.
    """

    def __init__(self, n_buckets: int, max_distance: int, n_heads: int, bidirectional: bool):
        super().__init__()
        self.n_buckets, self.max_distance = n_buckets, max_distance
        self.bidirectional = bidirectional
        self.weight = nn.Parameter(torch.empty(n_buckets, n_heads))  # own: term {stack}.pos

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Additive bias [1, h, s_q, s_k] for queries at q_pos [s_q], keys at k_pos [s_k]."""
        buckets = self.bucket(k_pos[None, :] - q_pos[:, None])  # [s_q, s_k]
        return (
            F.embedding(buckets, self.weight).permute(2, 0, 1).unsqueeze(0)
        )  # [s_q, s_k, h] -> [1, h, ..]

    def bucket(self, rel: torch.Tensor) -> torch.Tensor:
        """T5's _relative_position_bucket: exact buckets for small distances, log above."""
        n, out = self.n_buckets, torch.zeros_like(rel)
        if self.bidirectional:
            n //= 2
            out += (rel > 0).long() * n
            dist = rel.abs()
        else:
            dist = -torch.clamp(rel, max=0)
        exact = n // 2
        log_ratio = torch.log(dist.float().clamp(min=1) / exact) / math.log(
            self.max_distance / exact
        )
        large = (exact + (log_ratio * (n - exact)).long()).clamp(max=n - 1)
        return out + torch.where(dist < exact, dist, large)


def make_positions(spec: ModelSpec, stack: str) -> nn.Module | None:
    """The ``{stack}.pos`` module of the spec, or None for position='none'."""
    d = spec.d_model
    if spec.position == "learned":
        if spec.is_patch_input:
            return LearnedPositions(spec.n_positions, d)
        return LearnedPositions(spec.max_seq_len, d, spec.position_offset)
    if spec.position == "sinusoidal":
        n = spec.n_positions if spec.is_patch_input else spec.max_seq_len
        return SinusoidalPositions(n, d)
    if spec.position == "rotary":
        # latent attention (issue 22l) rotates only the qk_rope_head_dim part of q and k;
        # partial rotary (issue 22p) the first rotary_dim dims of each head
        return RotaryPositions(spec.qk_rope_head_dim or spec.head_dim, spec.rope_theta,
                               spec.rotary_dim)  # fmt: skip
    if spec.position == "relative":
        return RelativePositionBias(
            spec.relative_buckets, spec.relative_max_distance, spec.n_heads, stack == "encoder"
        )
    return None
