"""The position-wise feed-forward network (Vaswani et al. 3.3) and the activations the
reference model knows: used by every layer (reference_model/layers.py) and by each expert of a
mixture of experts (reference_model/moe.py)."""

from __future__ import annotations

import torch
from torch import nn

from estimator.spec import ModelSpec

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swiglu": nn.SiLU, "geglu": nn.GELU}


class FeedForward(nn.Module):
    """FFN(x) = down(act(up(x))) (Vaswani et al. 3.3); gated (Shazeer 2020):
    down(act(gate(x)) * up(x))."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d, d_ff, bias = spec.d_model, spec.d_ff, spec.ffn_bias
        self.up = nn.Linear(d, d_ff, bias=bias)
        self.gate = nn.Linear(d, d_ff, bias=bias) if spec.gated else None
        self.act = _ACTIVATIONS[spec.activation]()
        self.down = nn.Linear(d_ff, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(self.act(self.gate(x)) * self.up(x))  # [b, s, d_ff] -> [b, s, d]
        return self.down(self.act(self.up(x)))
