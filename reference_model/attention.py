"""Multi-head attention (Vaswani et al. 3.2): Q, K, V projections, scores, mix, output.

Eager attention is written out as two modules, ``scores`` (softmax(Q K^T / sqrt(d_h) + bias,
masked), dropout) and ``mix`` (probabilities @ V), so each is measured on its own; fused
attention is one ``sdpa`` module (torch.nn.functional.scaled_dot_product_attention). Grouped
keys/values (n_kv_heads < n_heads: GQA, MQA) are repeated for eager and passed with
``enable_gqa`` to the fused kernel. ``chunked`` attention runs block by block: scores
[b, n_c, h, c, c] with n_c = ceil(s / c), so no s x s tensor exists.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from estimator.spec import ModelSpec, UnsupportedError
from reference_model.cache import LayerCache
from reference_model.masks import Pattern, additive, combine
from reference_model.norms import make_norm
from reference_model.positions import RelativePositionBias, RotaryPositions

_HAS_ENABLE_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[.., h_kv, s, d_h] -> [.., h_kv * n_rep, s, d_h]; query head i reads kv head i // n_rep."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=-3)


class AttentionScores(nn.Module):
    """Attention probabilities softmax(Q K^T / sqrt(d_h) + bias, masked), then dropout."""

    def __init__(self, head_dim: int, dropout: float, softcap: float | None = None) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.softcap = softcap  # issue 22p: Gemma 2's attn_logit_softcapping

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, ok: torch.Tensor | None
    ) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [.., s_q, d_h] @ [.., d_h, s_k]
        if self.softcap is not None:  # soft-capping: c * tanh(scores / c), in (-c, c)
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if bias is not None:
            scores = scores + bias
        if ok is not None:
            scores = scores.masked_fill(~ok, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)  # [.., s_q, s_k]
        return self.dropout(probs) if self.dropout is not None else probs


class AttentionMix(nn.Module):
    """Weighted sum of the values: probabilities @ V."""

    def forward(self, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return probs @ v  # [.., s_q, s_k] @ [.., s_k, d_h] -> [.., s_q, d_h]


class FusedAttention(nn.Module):
    """torch scaled_dot_product_attention: scores, softmax, dropout and mix in one kernel."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.p = dropout

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        ok: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        mask = None if ok is None else additive(ok, q.dtype)
        if bias is not None:
            mask = bias.to(q.dtype) if mask is None else mask + bias.to(q.dtype)
        n_rep = q.shape[-3] // k.shape[-3]
        kwargs = {}
        if n_rep > 1 and _HAS_ENABLE_GQA:
            kwargs["enable_gqa"] = True
        elif n_rep > 1:
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        p = self.p if self.training else 0.0
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal, **kwargs
        )


class Attention(nn.Module):
    """Self-attention (``pattern`` given) or cross-attention (``pattern`` None) of one layer."""

    def __init__(self, spec: ModelSpec, impl: str, dropout: float, pattern: Pattern | None):
        super().__init__()
        d, h, h_kv, d_h, bias = (
            spec.d_model,
            spec.n_heads,
            spec.n_kv_heads,
            spec.head_dim,
            spec.qkv_bias,
        )
        self.h, self.h_kv, self.d_h, self.pattern, self.impl = h, h_kv, d_h, pattern, impl
        self.q_proj = nn.Linear(d, h * d_h, bias=bias)
        self.k_proj = nn.Linear(d, h_kv * d_h, bias=bias)
        self.v_proj = nn.Linear(d, h_kv * d_h, bias=bias)
        self.o_proj = nn.Linear(h * d_h, d, bias=spec.o_bias)
        if spec.qk_norm == "head":  # issue 22p: QK-norm over each head's d_h (Qwen3, Gemma 3)
            self.q_norm, self.k_norm = make_norm(spec, d_h), make_norm(spec, d_h)
        elif spec.qk_norm != "none":
            raise UnsupportedError(f"qk_norm={spec.qk_norm!r} is not built ({spec.name})")
        if impl == "eager":
            self.scores = AttentionScores(d_h, dropout, spec.attn_softcap)
            self.mix = AttentionMix()
        elif spec.attn_softcap is not None:  # transformers runs Gemma 2 eager for the same
            raise UnsupportedError(
                f"attn_softcap={spec.attn_softcap} needs attention_impl='eager' ({spec.name}): "
                "scaled_dot_product_attention has no soft-capping"
            )
        else:
            self.sdpa = FusedAttention(dropout)

    def heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, n, self.d_h).transpose(1, 2)  # [b, s, n*d_h] -> [b, n, s, d_h]

    def project(self, proj: nn.Module, norm: str, x: torch.Tensor, n: int) -> torch.Tensor:
        """x [b, s, d] -> [b, n, s, d_h]: the projection, its heads; with QK-norm (``q_norm`` /
        ``k_norm``) each head's d_h values normalized before the heads move to dim 1."""
        if not hasattr(self, norm):
            return self.heads(proj(x), n)
        b, s, _ = x.shape
        y = proj(x).view(b, s, n, self.d_h)  # [b, s, n*d_h] -> [b, s, n, d_h]
        return getattr(self, norm)(y).transpose(1, 2)  # -> [b, n, s, d_h]

    #: selective activation recomputation (Korthikanti et al. 2022 sec. 5): the eager core
    #: (scores, mask, softmax, dropout, probs @ V) under torch.utils.checkpoint; set by
    #: Transformer for workload.checkpointing == "selective"
    selective = False

    def attend(self, q, k, v, bias, ok, is_causal: bool = False) -> torch.Tensor:
        """Heads on dim -3: q [.., h, s_q, d_h], k/v [.., h_kv, s_k, d_h] -> [.., h, s_q, d_h]."""
        if self.impl == "eager":
            n_rep = self.h // self.h_kv

            def core(q, k, v):
                k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # [.., h_kv, ..] -> [.., h, ..]
                return self.mix(self.scores(q, k, bias, ok), v)

            if self.selective and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                return checkpoint(core, q, k, v, use_reentrant=False)  # keeps q, k, v only
            # not through core(): rebinding k, v here frees the unrepeated ones (a chunk's
            # clone in decode) before the scores, as the estimator replays it
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
            return self.mix(self.scores(q, k, bias, ok), v)
        return self.sdpa(q, k, v, bias, None if is_causal else ok, is_causal)

    def forward(
        self,
        x: torch.Tensor,
        *,
        start: int = 0,
        pos: nn.Module | None = None,
        key_padding: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """x [b, s, d] -> [b, s, d]. Self-attention: queries at absolute positions start..;
        cross-attention: keys/values from ``memory`` [b, s_src, d] (or the cache)."""
        b, s, _ = x.shape
        q = self.project(self.q_proj, "q_norm", x, self.h)  # [b, h, s, d_h]
        if self.pattern is None:
            out = self.cross(q, memory, key_padding, cache)
        else:
            out = self.self_attention(x, q, start, pos, key_padding, cache)
        out = out.transpose(1, 2).reshape(b, s, self.h * self.d_h)  # [b,h,s,d_h] -> [b,s,h*d_h]
        return self.o_proj(out)

    def cross(self, q, memory, key_padding, cache: LayerCache | None) -> torch.Tensor:
        if cache is not None and cache.cross_k is not None:
            k, v = cache.cross_k, cache.cross_v
        else:
            k = self.project(self.k_proj, "k_norm", memory, self.h_kv)  # [b, h_kv, s_src, d_h]
            v = self.heads(self.v_proj(memory), self.h_kv)
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        return self.attend(q, k, v, None, combine(None, key_padding))

    def self_attention(self, x, q, start, pos, key_padding, cache) -> torch.Tensor:
        s = x.shape[1]
        k = self.project(self.k_proj, "k_norm", x, self.h_kv)  # [b, h_kv, s, d_h]
        v = self.heads(self.v_proj(x), self.h_kv)
        q_pos = torch.arange(start, start + s, device=x.device)
        if isinstance(pos, RotaryPositions):
            q, k = pos(q, q_pos), pos(k, q_pos)
        if cache is not None:
            k, v = cache.append_self(k, v, self.pattern.keep_last(start + s))
        k_pos = torch.arange(start + s - k.shape[-2], start + s, device=x.device)
        p = self.pattern
        if p.kind == "chunked" and s > 1 and k.shape[-2] == s and start % p.window == 0:
            return self.chunked(q, k, v, pos, key_padding)
        bias = pos(q_pos, k_pos) if isinstance(pos, RelativePositionBias) else None
        plain_causal = p.kind == "causal" and key_padding is None and bias is None
        is_causal = plain_causal and k.shape[-2] == s
        if is_causal and self.impl != "eager":
            ok = None  # sdpa's is_causal: no [s, s] mask is built
        else:
            ok = combine(p.allowed(q_pos, k_pos), key_padding)
        return self.attend(q, k, v, bias, ok, is_causal)

    def chunked(self, q, k, v, pos, key_padding) -> torch.Tensor:
        """Chunk-wise attention, block by block: scores [b, n_c, h, c, c], memory O(s * c)."""
        b, h, s, d_h = q.shape
        c = self.pattern.window
        n_c = -(-s // c)
        pad = n_c * c - s  # the last chunk is padded with masked keys

        def blocks(t: torch.Tensor) -> torch.Tensor:
            t = F.pad(t, (0, 0, 0, pad))  # [b, n, s, d_h] -> [b, n, n_c*c, d_h]
            return t.view(b, t.shape[1], n_c, c, d_h).transpose(1, 2)  # -> [b, n_c, n, c, d_h]

        local = torch.arange(c, device=q.device)
        real = torch.arange(n_c * c, device=q.device) < s  # [n_c*c]: not padding of the chunking
        if key_padding is not None:
            real = real & F.pad(key_padding.bool(), (0, pad))  # [b, n_c*c]
        key_ok = real.view(-1, n_c, 1, 1, c)  # [b|1, n_c, 1, 1, c]
        ok = key_ok
        if self.pattern.causal:
            ok = key_ok & (local[:, None] >= local[None, :])  # [b|1, n_c, 1, c, c]
        bias = pos(local, local) if isinstance(pos, RelativePositionBias) else None  # [1,h,c,c]
        out = self.attend(blocks(q), blocks(k), blocks(v), bias, ok)  # [b, n_c, h, c, d_h]
        out = out.transpose(1, 2).reshape(b, h, n_c * c, d_h)  # -> [b, h, n_c*c, d_h]
        return out[:, :, :s]
