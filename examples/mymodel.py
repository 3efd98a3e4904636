"""A model of your own, measured by tgauge without a spec: ``tgauge profile
examples/mymodel.py:build -s 64`` (or ``--device meta``, ``--mode prefill``).

tgauge calls ``build`` with the workload's sizes it names (``batch_size``, ``seq_len``; any of
them may be left out) under ``torch.device(DEVICE)``, so the parameters are made where they
are measured (nothing is allocated on meta). It returns the nn.Module and, optionally, its
example inputs (a tensor, a tuple of positional arguments, or a dict of keyword arguments);
without inputs tgauge draws token ids [b, s] for a model whose first module is an nn.Embedding.
Training uses ``out.loss`` when the output has one, else the sum of the output tensor.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP (nanoGPT's Block, with torch's sdpa)."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # 3 x [b, s, d]
        q, k, v = (t.view(b, s, self.h, d // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [b, h, s, d_h]
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))  # [b, s, d]
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab_size: int = 1000, d: int = 128, h: int = 4, n_layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # [b, s, d]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # [b, s, V]


def build(batch_size: int = 2, seq_len: int = 64) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model and one batch of token ids [b, s]."""
    model = TinyLM()
    input_ids = torch.randint(0, 1000, (batch_size, seq_len))
    return model, {"input_ids": input_ids}
