"""The position-wise FFN, one Transformer layer, a stack of layers, patch embedding, pooler."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from estimator.spec import ModelSpec
from reference_model.attention import Attention
from reference_model.cache import KVCache
from reference_model.ffn import _ACTIVATIONS, FeedForward
from reference_model.masks import Pattern, layer_patterns
from reference_model.mla import LatentAttention
from reference_model.norms import make_norm
from reference_model.positions import LearnedPositions, SinusoidalPositions, make_positions


class Layer(nn.Module):
    """Self-attention, cross-attention (decoder of encoder-decoder), FFN; each sublayer is
    pre-norm x + Drop(F(Norm(x))) or post-norm Norm(x + Drop(F(x))). A parallel block
    (``spec.parallel_block``; GPT-J, GPT-NeoX's use_parallel_residual, Falcon) reads one input
    x in both: x + Drop(Attn(Norm1(x))) + Drop(FFN(Norm2(x))), 'one_norm': Norm2 is Norm1's
    output (no ffn_norm)."""

    def __init__(
        self,
        spec: ModelSpec,
        impl: str,
        dropout: float,
        pattern: Pattern,
        cross: bool,
        moe: bool = False,
    ):
        super().__init__()
        self.pre = spec.norm_position == "pre"
        self.attn_norm = make_norm(spec)
        attention = LatentAttention if spec.kv_lora_rank else Attention  # issue 22l: MLA
        self.self_attn = attention(spec, impl, dropout, pattern)
        if spec.sublayer_norm == "sandwich":  # issue 22p: Gemma 2's post-attention norm
            self.attn_out_norm = make_norm(spec)
        if cross:
            self.cross_norm = make_norm(spec)
            self.cross_attn = Attention(spec, impl, dropout, None)
        self.parallel = spec.parallel_block
        if self.parallel != "one_norm":
            self.ffn_norm = make_norm(spec)
        if moe:  # issue 22e: a mixture of experts (reference_model/moe.py)
            from reference_model.moe import MoE

            self.ffn = MoE(spec)
        else:
            self.ffn = FeedForward(spec)
        if spec.sublayer_norm == "sandwich":  # Gemma 2's post-feedforward norm
            self.ffn_out_norm = make_norm(spec)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None  # residual dropout

    def sublayer(self, x: torch.Tensor, norm: nn.Module, fn, out_norm=None) -> torch.Tensor:
        """Pre-norm x + Drop(F(Norm(x))); ``out_norm`` (sandwich, Gemma 2): x +
        Drop(OutNorm(F(Norm(x)))); post-norm Norm(x + Drop(F(x)))."""
        drop = self.dropout if self.dropout is not None else (lambda t: t)
        if out_norm is not None:
            return x + drop(out_norm(fn(norm(x))))
        if self.pre:
            return x + drop(fn(norm(x)))
        return norm(x + drop(fn(x)))

    def forward(self, x, start, pos, key_padding, memory, memory_padding, cache) -> torch.Tensor:
        if self.parallel != "none":
            return self.parallel_forward(x, start, pos, key_padding, cache)
        x = self.sublayer(
            x,
            self.attn_norm,
            lambda h: self.self_attn(h, start=start, pos=pos, key_padding=key_padding, cache=cache),
            getattr(self, "attn_out_norm", None),
        )
        if hasattr(self, "cross_attn"):
            x = self.sublayer(
                x,
                self.cross_norm,
                lambda h: self.cross_attn(
                    h, memory=memory, key_padding=memory_padding, cache=cache
                ),
            )
        return self.sublayer(x, self.ffn_norm, self.ffn, getattr(self, "ffn_out_norm", None))

    def parallel_forward(self, x, start, pos, key_padding, cache) -> torch.Tensor:
        """x + Drop(Attn(Norm1(x))) + Drop(FFN(Norm2(x))): the attention branch runs first,
        then the second norm and the FFN, then (x + a) + m (as GPT-NeoX's
        mlp_output + attn_output + residual, one order of the same sum)."""
        drop = self.dropout if self.dropout is not None else (lambda t: t)
        h = self.attn_norm(x)
        a = drop(self.self_attn(h, start=start, pos=pos, key_padding=key_padding, cache=cache))
        h2 = h if self.parallel == "one_norm" else self.ffn_norm(x)
        m = drop(self.ffn(h2))
        return x + a + m


class PatchEmbedding(nn.Module):
    """ViT (Dosovitskiy et al. 2021): image -> patches projected to d, a class token prepended."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        p = spec.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.d_model))
        self.proj = nn.Conv2d(spec.n_channels, spec.d_model, kernel_size=p, stride=p)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixel_values)  # [b, c, H, W] -> [b, d, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # -> [b, n_patches, d]
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # [b, 1, d]
        return torch.cat([cls, x], dim=1)  # -> [b, n_patches + 1, d]


class Pooler(nn.Module):
    """BERT pooler: tanh(proj(x[:, 0])), the first position's hidden state."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x[:, 0]))  # [b, s, d] -> [b, d]


class HeadTransform(nn.Module):
    """BERT's MLM head before the vocabulary projection: norm(act(dense(x))), per position."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.dense = nn.Linear(spec.d_model, spec.d_model)
        self.act = _ACTIVATIONS[spec.activation]()
        self.norm = make_norm(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))  # [b, s, d] -> [b, s, d]


class Stack(nn.Module):
    """Embedding extras (patches, positions, token types, norm, dropout), layers, final norm."""

    def __init__(
        self,
        spec: ModelSpec,
        stack: str,
        n_layers: int,
        impl: str,
        dropout: float,
        pattern: Pattern,
        checkpointing: bool,
    ):
        super().__init__()
        if spec.is_patch_input:
            self.patch = PatchEmbedding(spec)
        self.pos = make_positions(spec, stack)
        if spec.n_token_types and stack == spec.stacks[0][0]:
            self.token_type = nn.Embedding(spec.n_token_types, spec.d_model)
        if spec.embed_norm:
            self.embed_norm = make_norm(spec)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None  # embedding dropout
        cross = stack == "decoder" and spec.arch == "encoder-decoder"
        moe = stack == "decoder" and spec.n_experts > 0  # issue 22e: but dense_layers
        patterns = layer_patterns(spec, stack, pattern, n_layers)  # issue 22p: per layer
        self.layers = nn.ModuleList(
            Layer(spec, impl, dropout, patterns[i], cross, moe and i not in spec.dense_layers)
            for i in range(n_layers)
        )
        self.final_norm = make_norm(spec) if spec.final_norm else None
        self.checkpointing = checkpointing

    def embed_extras(self, x: torch.Tensor, start: int, token_type_ids) -> torch.Tensor:
        """x [b, s, d] token or patch embeddings (+ absolute positions, token types)."""
        if isinstance(self.pos, LearnedPositions | SinusoidalPositions):
            positions = torch.arange(start, start + x.shape[1], device=x.device)
            x = x + self.pos(positions).to(x.dtype)  # [b, s, d] + [s, d]
        if hasattr(self, "token_type"):
            if token_type_ids is None:
                token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            x = x + self.token_type(token_type_ids)
        if hasattr(self, "embed_norm"):
            x = self.embed_norm(x)
        return self.dropout(x) if self.dropout is not None else x

    def forward(
        self,
        x: torch.Tensor,
        *,
        start: int = 0,
        key_padding: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = self.embed_extras(x, start, token_type_ids)
        recompute = self.checkpointing and cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            args = (
                x,
                start,
                self.pos,
                key_padding,
                memory,
                memory_padding,
                None if cache is None else cache.layers[i],
            )
            if recompute:  # full activation checkpointing: keep only the layer input
                x = checkpoint(layer, *args, use_reentrant=False)
            else:
                x = layer(*args)
        return self.final_norm(x) if self.final_norm is not None else x
