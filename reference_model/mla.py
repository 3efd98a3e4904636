"""Multi-head latent attention (MLA; DeepSeek-V2, Liu et al. 2024, sec. 2.1; DeepSeek-V3).

Keys and values come from a shared latent c_kv = RMSNorm(W_DKV x) of ``kv_lora_rank`` values
per token, decompressed per head by ``kv_b_proj``; each head's q.k width d_qk = d_nope + d_rope
splits into a part without positions (from the latent) and a rotary part, whose key k_rot (one
for all heads) comes straight from x. Queries go through a rank-``q_lora_rank`` bottleneck
(or one q_proj when q_lora_rank is None). The structure of transformers'
models/deepseek_v3/modeling_deepseek_v3.py DeepseekV3Attention, under the glossary's names:

  ours        DeepSeek-V3                  shape
  q_a_proj    q_a_proj                     d -> r_q            (bias: qkv_bias)
  q_a_norm    q_a_layernorm (RMSNorm)      r_q
  q_b_proj    q_b_proj                     r_q -> h d_qk       (no bias)
  q_proj      q_proj (q_lora_rank None)    d -> h d_qk         (no bias)
  kv_a_proj   kv_a_proj_with_mqa           d -> r_kv + d_rope  (bias: qkv_bias)
  kv_a_norm   kv_a_layernorm (RMSNorm)     r_kv
  kv_b_proj   kv_b_proj                    r_kv -> h (d_nope + d_v)  (no bias)
  o_proj      o_proj                       h d_v -> d          (bias: o_bias)

Rotary positions (the stack's ``pos``, built over d_rope for MLA) rotate only q's and k's
rotary parts, in the rotate-half layout (DeepSeek's checkpoints use the interleaved one,
``rope_interleave``: the same rotation of permuted weight columns). Softmax scale
1 / sqrt(d_nope + d_rope) (DeepSeek's ``qk_head_dim ** -0.5`` without YaRN's mscale).

The KV cache holds the latent, as vLLM (vllm/attention/backends/mla: kv_c and k_pe) and
transformers 5 (``cache.update(kv_nope, k_rot)`` before ``expand_kv``) do: per layer the normed
latent [b, 1, T, r_kv] as the cache's "keys" and the rotated k_rot [b, 1, T, d_rope] as its
"values" (reference_model/cache.py LayerCache.self_k / self_v), and every pass decompresses
all cached positions through kv_b_proj (``expand``).

Fused attention: torch's CPU flash kernel needs one head dim for q, k and v, so v [.., d_v] is
zero-padded to d_qk and the output sliced back (vLLM's flash-attention MLA path does the same,
``_flash_attn_varlen_diff_headdims``); v_head_dim > d_qk is refused there.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from estimator.spec import ModelSpec, UnsupportedError
from reference_model.attention import AttentionMix, AttentionScores, FusedAttention
from reference_model.cache import LayerCache
from reference_model.masks import Pattern, combine
from reference_model.norms import RMSNorm


def check_buildable(spec: ModelSpec, impl: str, pattern: Pattern | None) -> None:
    """Refuse by name what this module does not build (UnsupportedError)."""
    if pattern is None or spec.arch != "decoder":
        raise UnsupportedError(
            f"kv_lora_rank={spec.kv_lora_rank} with arch={spec.arch!r}: the reference model "
            "builds latent attention as the self-attention of decoder-only models"
        )
    if spec.norm != "rmsnorm":
        raise UnsupportedError(
            f"kv_lora_rank={spec.kv_lora_rank} with norm={spec.norm!r}: latent attention's "
            "q_a_norm / kv_a_norm are RMSNorms (DeepSeek-V2/V3); give norm='rmsnorm'"
        )
    if impl != "eager" and spec.v_head_dim > spec.head_dim:
        raise UnsupportedError(
            f"v_head_dim={spec.v_head_dim} > qk_nope_head_dim + qk_rope_head_dim="
            f"{spec.head_dim} with fused attention (v is padded to the q.k width)"
        )


class LatentAttention(nn.Module):
    """Multi-head latent attention of one decoder layer (self-attention only)."""

    def __init__(self, spec: ModelSpec, impl: str, dropout: float, pattern: Pattern | None):
        super().__init__()
        check_buildable(spec, impl, pattern)
        d, h = spec.d_model, spec.n_heads
        self.h, self.pattern, self.impl = h, pattern, impl
        self.d_nope, self.d_rope, self.d_v = (
            spec.qk_nope_head_dim,
            spec.qk_rope_head_dim,
            spec.v_head_dim,
        )
        self.d_qk, self.r_kv = self.d_nope + self.d_rope, spec.kv_lora_rank
        if spec.q_lora_rank is None:
            self.q_proj = nn.Linear(d, h * self.d_qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(d, spec.q_lora_rank, bias=spec.qkv_bias)
            self.q_a_norm = RMSNorm(spec.q_lora_rank, spec.norm_eps)
            self.q_b_proj = nn.Linear(spec.q_lora_rank, h * self.d_qk, bias=False)
        self.kv_a_proj = nn.Linear(d, self.r_kv + self.d_rope, bias=spec.qkv_bias)
        self.kv_a_norm = RMSNorm(self.r_kv, spec.norm_eps)
        self.kv_b_proj = nn.Linear(self.r_kv, h * (self.d_nope + self.d_v), bias=False)
        self.o_proj = nn.Linear(h * self.d_v, d, bias=spec.o_bias)
        if impl == "eager":
            self.scores = AttentionScores(self.d_qk, dropout)  # scale 1 / sqrt(d_qk)
            self.mix = AttentionMix()
        else:
            self.sdpa = FusedAttention(dropout)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, s, d] -> q [b, h, s, d_qk] (a view of the projection's output)."""
        b, s, _ = x.shape
        if hasattr(self, "q_proj"):
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))  # [b, s, r_q] -> [b, s, h*d_qk]
        return q.view(b, s, self.h, self.d_qk).transpose(1, 2)  # -> [b, h, s, d_qk]

    def expand(
        self, latent: torch.Tensor, k_rot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompress the latent [b, 1, T, r_kv] into per-head keys [b, h, T, d_qk] (k_nope and
        the shared k_rot [b, 1, T, d_rope], concatenated) and values [b, h, T, d_v] (a view)."""
        b, _, t, _ = latent.shape
        kv = self.kv_b_proj(latent)  # [b, 1, T, r_kv] -> [b, 1, T, h*(d_nope + d_v)]
        kv = kv.view(b, t, self.h, self.d_nope + self.d_v).transpose(1, 2)  # [b, h, T, ..]
        k_nope, v = kv.split([self.d_nope, self.d_v], dim=-1)
        k = torch.cat([k_nope, k_rot.expand(b, self.h, t, self.d_rope)], dim=-1)
        return k, v  # [b, h, T, d_qk], [b, h, T, d_v]

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
        """x [b, s, d] -> [b, s, d]; queries at absolute positions start.. (Attention's API)."""
        b, s, _ = x.shape
        q = self.query(x)
        q_nope, q_rot = q.split([self.d_nope, self.d_rope], dim=-1)
        compressed = self.kv_a_proj(x)  # [b, s, r_kv + d_rope]
        latent, k_rot = compressed.split([self.r_kv, self.d_rope], dim=-1)
        latent = self.kv_a_norm(latent).view(b, 1, s, self.r_kv)  # one "head" of r_kv
        k_rot = k_rot.view(b, 1, s, self.d_rope)
        q_pos = torch.arange(start, start + s, device=x.device)
        q_rot, k_rot = pos(q_rot, q_pos), pos(k_rot, q_pos)  # RotaryPositions over d_rope
        if cache is not None:  # the latent is cached, before its decompression
            latent, k_rot = cache.append_self(latent, k_rot, self.pattern.keep_last(start + s))
        q = torch.cat([q_nope, q_rot], dim=-1)  # [b, h, s, d_qk]
        k, v = self.expand(latent, k_rot)
        out = self.attend(q, k, v, start, key_padding)  # [b, h, s, d_v]
        out = out.transpose(1, 2).reshape(b, s, self.h * self.d_v)  # -> [b, s, h*d_v]
        return self.o_proj(out)

    def attend(self, q, k, v, start: int, key_padding) -> torch.Tensor:
        """q [b, h, s, d_qk], k [b, h, T, d_qk], v [b, h, T, d_v] -> [b, h, s, d_v]."""
        s, t = q.shape[-2], k.shape[-2]
        p = self.pattern
        q_pos = torch.arange(start, start + s, device=q.device)
        k_pos = torch.arange(start + s - t, start + s, device=q.device)
        is_causal = p.kind == "causal" and key_padding is None and t == s
        if self.impl == "eager":
            ok = combine(p.allowed(q_pos, k_pos), key_padding)
            return self.mix(self.scores(q, k, None, ok), v)
        ok = None if is_causal else combine(p.allowed(q_pos, k_pos), key_padding)
        pad = self.d_qk - self.d_v
        v = F.pad(v, (0, pad)) if pad else v  # [b, h, T, d_v] -> [b, h, T, d_qk]
        out = self.sdpa(q, k, v, None, ok, is_causal)  # scale 1 / sqrt(d_qk): sdpa's default
        return out[..., : self.d_v] if pad else out
