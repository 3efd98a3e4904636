"""Normalization layers: LayerNorm (torch) and RMSNorm (written out, torch 2.4 compatible)."""

from __future__ import annotations

import torch
from torch import nn

from estimator.spec import ModelSpec


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * weight; no bias, no centring."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # [.., 1]
        return x * rms * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(spec: ModelSpec, width: int | None = None) -> nn.Module:
    """The spec's norm over d_model (or ``width``: QK-norm's head_dim): nn.LayerNorm (weight +
    bias) or RMSNorm (weight)."""
    d = spec.d_model if width is None else width
    if spec.norm == "rmsnorm":
        return RMSNorm(d, spec.norm_eps)
    return nn.LayerNorm(d, eps=spec.norm_eps)
