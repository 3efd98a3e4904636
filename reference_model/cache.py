"""KV cache for incremental decoding (docs/glossary.md, "Decode convention").

Per decoder layer: self-attention keys and values [b, h_kv, t, d_h], grown one step at a time
with torch.cat and capped to the last w positions under ``sliding_window`` or the current
chunk's positions under ``chunked``; cross-attention keys and values [b, h_kv, s_src, d_h],
computed once from the encoder output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    """The cached tensors of one decoder layer (None until filled)."""

    self_k: torch.Tensor | None = None
    self_v: torch.Tensor | None = None
    cross_k: torch.Tensor | None = None
    cross_v: torch.Tensor | None = None

    def append_self(
        self, k: torch.Tensor, v: torch.Tensor, keep: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values [b, h_kv, s, d_h]; return all keys/values to attend to
        (past + new), and keep only the last ``keep`` positions (None: all) for later steps.
        A single new position attends to the kept positions only, as a rolling-buffer cache
        does; several (a prefill) attend to all, masked by the pattern."""
        new = k.shape[-2]
        if self.self_k is not None:
            k = torch.cat([self.self_k, k], dim=-2)  # [b, h_kv, t, d_h] + [.., s, ..]
            v = torch.cat([self.self_v, v], dim=-2)
        if keep is not None and keep < k.shape[-2]:
            # clone: a slice would keep the whole uncapped storage alive
            self.self_k, self.self_v = k[..., -keep:, :].clone(), v[..., -keep:, :].clone()
            if new == 1:  # one query sees exactly the kept positions (its window or chunk)
                return self.self_k, self.self_v
        else:
            self.self_k, self.self_v = k, v
        return k, v


@dataclass
class KVCache:
    """Keys/values of every decoder layer.

    ``length``: tokens the decoder has seen (the absolute position of the next token);
    ``held``: positions the self-attention cache holds now (``length`` capped by the pattern);
    ``memory_padding``: the encoder's attention mask [b, s_src] for cross-attention.
    """

    n_layers: int
    length: int = 0
    memory_padding: torch.Tensor | None = None
    layers: list[LayerCache] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = [LayerCache() for _ in range(self.n_layers)]

    @property
    def held(self) -> int:
        k = self.layers[0].self_k
        return 0 if k is None else k.shape[-2]

    def terms(self) -> dict[str, int]:
        """Bytes per glossary term: ``decoder.layers.self_attn``, ``decoder.layers.cross_attn``."""

        def size(t: torch.Tensor | None) -> int:
            return 0 if t is None else t.numel() * t.element_size()

        out = {"decoder.layers.self_attn": 0, "decoder.layers.cross_attn": 0}
        for layer in self.layers:
            out["decoder.layers.self_attn"] += size(layer.self_k) + size(layer.self_v)
            out["decoder.layers.cross_attn"] += size(layer.cross_k) + size(layer.cross_v)
        return {name: n for name, n in out.items() if n}

    def nbytes(self) -> int:
        """Sum of the bytes of all cached tensors."""
        return sum(self.terms().values())
