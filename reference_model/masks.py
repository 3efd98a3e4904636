"""Attention patterns as boolean "may attend" masks over absolute positions.

Conventions of docs/glossary.md. Causal stacks: query i sees keys j <= i; sliding_window w:
i - w < j <= i; chunked c: j // c == i // c and j <= i. Bidirectional stacks: all j;
sliding_window: |i - j| < w; chunked: j // c == i // c. Masks are built from the absolute
positions of queries and keys, so the same function serves a full forward and a decode step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimator.spec import ModelSpec, UnsupportedError


@dataclass(frozen=True)
class Pattern:
    """The self-attention pattern of one stack: kind ('full' | 'causal' | 'sliding_window' |
    'chunked'), window w (sliding width or chunk size), and whether the stack is causal."""

    kind: str
    window: int | None
    causal: bool

    @classmethod
    def for_stack(cls, kind: str, window: int | None, stack: str) -> Pattern:
        causal = kind != "full" if stack == "decoder" else kind == "causal"
        return cls(kind, window, causal)

    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """Bool [s_q, s_k], True where query q_pos[i] may attend key k_pos[j]; None = all."""
        i, j = q_pos[:, None], k_pos[None, :]  # [s_q, 1], [1, s_k]
        ok = None
        if self.causal:
            ok = j <= i
        if self.kind == "sliding_window":
            near = (i - j < self.window) if self.causal else ((i - j).abs() < self.window)
            ok = near if ok is None else ok & near
        elif self.kind == "chunked":
            same = torch.div(i, self.window, rounding_mode="floor") == torch.div(
                j, self.window, rounding_mode="floor"
            )
            ok = same if ok is None else ok & same
        return ok

    def keep_last(self, length: int) -> int | None:
        """How many cached key positions to keep once ``length`` tokens were seen (None: all)."""
        if self.kind == "sliding_window":
            return min(length, self.window)
        if self.kind == "chunked":
            return (length - 1) % self.window + 1
        return None


def combine(allowed: torch.Tensor | None, key_padding: torch.Tensor | None) -> torch.Tensor | None:
    """Bool mask, True = attend: the pattern [s_q, s_k] and the key padding [b, s_k] (1 = token).

    Returns None (attend everywhere), [s_q, s_k], or [b, 1, s_q, s_k].
    """
    if key_padding is None:
        return allowed
    pad_ok = key_padding.bool()[:, None, None, :]  # [b, s_k] -> [b, 1, 1, s_k]
    return pad_ok if allowed is None else allowed & pad_ok


def additive(ok: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float mask to add to scores: 0 where ``ok``, the dtype's (finite) minimum elsewhere.

    A finite minimum, not -inf, keeps fully masked rows (padding queries) finite: they get a
    uniform distribution instead of NaN.
    """
    zero = torch.zeros((), dtype=dtype, device=ok.device)
    return torch.where(ok, zero, torch.finfo(dtype).min)


def layer_patterns(spec: ModelSpec, stack: str, pattern: Pattern, n_layers: int) -> list[Pattern]:
    """The self-attention pattern of each layer of ``stack``: the stack's own, or under a
    per-layer pattern (``spec.layer_pattern``: Gemma 2/3's local and global layers, issue 22)
    the stack's sliding window for 'sliding' layers and causal attention over every earlier
    position for 'full' ones (their caches keep every position)."""
    if spec.layer_pattern is None or stack != "decoder":
        return [pattern] * n_layers
    if pattern.kind != "sliding_window" or pattern.window != spec.sliding_window:
        raise UnsupportedError(
            f"attention_pattern={pattern.kind!r} (window {pattern.window}) is not built with a "
            f"per-layer layer_pattern ({spec.name}): its sliding layers keep "
            f"sliding_window={spec.sliding_window}"
        )
    full = Pattern("causal", None, True)
    return [pattern if kind == "sliding" else full for kind in spec.layer_pattern]
