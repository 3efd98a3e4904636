"""The Transformer: shared token embedding, encoder and/or decoder stack, pooler, LM head, loss.

Module paths follow docs/glossary.md. ``build_model(spec, workload)`` reads the attention
implementation, pattern/window and dropout from the workload; ``device="meta"`` builds even a
7B model in seconds (no memory, no init).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from estimator.spec import ModelSpec, SpecError, UnsupportedError, Workload
from estimator.spec.features import features
from estimator.spec.workload import resolved_pattern
from reference_model.cache import KVCache
from reference_model.layers import HeadTransform, Pooler, Stack
from reference_model.masks import Pattern

#: the issue-22 features (estimator/spec/features.py ``features``) the reference model builds
BUILT = (
    "parallel_block",
    "qkv_bias",
    "o_bias",
    "ffn_bias",
    "embed_scale",
    "n_experts",
    "kv_lora_rank",
    # issue 22p
    "layer_pattern",
    "qk_norm='head'",
    "sublayer_norm='sandwich'",
    "attn_softcap",
    "final_softcap",
    "rotary_dim",
)

IGNORE_INDEX = -100  # label of padding: cross-entropy ignores it

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """estimator dtype name (fp32, fp16, bf16) -> torch dtype."""
    if name not in _TORCH_DTYPES:
        raise SpecError(f"dtype={name!r} is invalid for the reference model: {list(_TORCH_DTYPES)}")
    return _TORCH_DTYPES[name]


@dataclass
class ModelOutput:
    """logits [b, s, V] (LM head), loss (scalar, with labels), hidden_states [b, s, d] of the
    last stack, pooled [b, d] (pooler)."""

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


class CrossEntropy(nn.Module):
    """Mean token cross-entropy over labels != -100 (padding), in the logits' dtype."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        v = logits.shape[-1]
        return F.cross_entropy(logits.view(-1, v), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets aligned with every position: [t1, t2, .., -100] (no logits copy)."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)  # [b, s]


class SoftCap(nn.Module):
    """Soft-capped logits cap * tanh(logits / cap), in (-cap, cap) (Gemma 2's
    final_logit_softcapping, issue 22p): tanh saves its output [b, s, V]."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits / self.cap) * self.cap


class Transformer(nn.Module):
    """Encoder-only, decoder-only or encoder-decoder Transformer of a ModelSpec."""

    def __init__(self, spec: ModelSpec, workload: Workload | None = None) -> None:
        super().__init__()
        workload = workload or Workload()
        if spec.n_labels:
            raise UnsupportedError(
                f"n_labels={spec.n_labels}: the reference model has no classifier head; "
                "measure the Hugging Face class (validate --hf)"
            )
        # issue 22: what the reference model does not build yet (BUILT: what it does)
        unbuilt = [f for f in features(spec) if not f.startswith(BUILT)]
        if unbuilt:
            raise UnsupportedError(
                f"the reference model does not build {', '.join(unbuilt)} ({spec.name}); "
                "measure the Hugging Face class (validate --hf)"
            )
        self.spec = spec
        d = spec.d_model
        if spec.vocab_size is not None:
            self.embed = nn.Embedding(spec.vocab_size, d)
        for stack, n_layers in spec.stacks:
            kind, window = resolved_pattern(spec, workload, stack)
            pattern = Pattern.for_stack(kind, window, stack)
            full = workload.checkpointing == "full"
            mod = Stack(
                spec, stack, n_layers, workload.attention_impl, workload.dropout, pattern, full
            )
            setattr(self, stack, mod)
        if workload.checkpointing == "selective" and spec.kv_lora_rank:  # issue 22l
            raise UnsupportedError(
                f"checkpointing='selective' with kv_lora_rank={spec.kv_lora_rank}: the "
                "reference model's latent attention has no selective recomputation"
            )
        if workload is not None and workload.checkpointing == "selective":
            from reference_model.attention import Attention

            for module in self.modules():
                if isinstance(module, Attention):
                    module.selective = True
        if spec.pooler:
            self.pooler = Pooler(d)
        if spec.head_transform:
            self.head_transform = HeadTransform(spec)
        if spec.lm_head:
            self.lm_head = nn.Linear(d, spec.vocab_size, bias=spec.lm_head_bias)
            if spec.tie_embeddings:
                self.lm_head.weight = self.embed.weight  # tied: one storage, owned by embed
            self.loss = CrossEntropy()
            if spec.final_softcap is not None:
                self.final_softcap = SoftCap(spec.final_softcap)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """The decoder-only token embeddings [b, s, d], times sqrt(d_model) with
        ``spec.embed_scale`` (Gemma; x * a Python scalar: a new tensor, nothing saved)."""
        x = self.embed(ids)
        return x * math.sqrt(self.spec.d_model) if self.spec.embed_scale else x

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head's logits [b, s, V], soft-capped with ``spec.final_softcap``."""
        logits = self.lm_head(h)
        return self.final_softcap(logits) if hasattr(self, "final_softcap") else logits

    # ---- training / prefill forward --------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Masks: 1 = token, 0 = padding. Labels (-100 = ignore): decoder-only, the tokens
        themselves (input_ids); they are shifted inside, so position i predicts token i + 1.
        Encoder-decoder: the decoder targets, aligned with decoder_input_ids (teacher forcing:
        decoder_input_ids = labels shifted right behind a start token). Encoder-only: aligned."""
        first = self.encoder if hasattr(self, "encoder") else self.decoder
        if pixel_values is not None:
            x = first.patch(pixel_values)  # [b, n_patches + 1, d]
        else:
            x = self.embed_tokens(input_ids)  # [b, s] -> [b, s, d]
        h = first(x, key_padding=attention_mask, token_type_ids=token_type_ids)
        if self.spec.arch == "encoder-decoder":
            y = self.embed(decoder_input_ids)  # [b, s_t] -> [b, s_t, d]
            h = self.decoder(
                y, key_padding=decoder_attention_mask, memory=h, memory_padding=attention_mask
            )
        out = ModelOutput(hidden_states=h)
        if hasattr(self, "pooler"):
            out.pooled = self.pooler(h)
        if hasattr(self, "head_transform"):
            h = self.head_transform(h)  # [b, s, d] -> [b, s, d]
        if hasattr(self, "lm_head"):
            out.logits = self.head(h)  # [b, s, d] -> [b, s, V]
            if labels is not None:
                targets = shift_labels(labels) if self.spec.arch == "decoder" else labels
                out.loss = self.loss(out.logits, targets)
        return out

    # ---- incremental decoding --------------------------------------------------------------
    def new_cache(self) -> KVCache:
        if not hasattr(self, "decoder") or not hasattr(self, "lm_head"):
            raise SpecError(
                f"arch={self.spec.arch!r} is invalid for decoding: needs a decoder and an LM head"
            )
        return KVCache(len(self.decoder.layers))

    def _decoder_step(self, ids: torch.Tensor, cache: KVCache, memory=None) -> torch.Tensor:
        start = cache.length
        y = self.embed_tokens(ids)  # [b, s] -> [b, s, d]
        h = self.decoder(
            y, start=start, memory=memory, memory_padding=cache.memory_padding, cache=cache
        )
        cache.length = start + ids.shape[1]
        if hasattr(self, "head_transform"):
            h = self.head_transform(h)
        return self.head(h)  # [b, s, V]

    def prefill(
        self,
        input_ids: torch.Tensor,
        cache: KVCache,
        *,
        encoder_input_ids: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the decoder prompt input_ids [b, P] (encoder-decoder: after the encoder on
        encoder_input_ids [b, s], whose cross keys/values are cached); -> logits [b, P, V].
        Prompts are unpadded (no attention mask in decoding)."""
        memory = None
        if self.spec.arch == "encoder-decoder":
            if encoder_input_ids is None:
                raise SpecError(
                    "encoder_input_ids=None is invalid: an encoder-decoder needs "
                    "source tokens to prefill"
                )
            memory = self.encoder(self.embed(encoder_input_ids), key_padding=encoder_attention_mask)
            cache.memory_padding = encoder_attention_mask
        return self._decoder_step(input_ids, cache, memory)

    def decode_step(self, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token per sequence, token_ids [b, 1] -> logits [b, 1, V]."""
        return self._decoder_step(token_ids, cache)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None,
        max_new_tokens: int,
        *,
        use_cache: bool = True,
        encoder_input_ids: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Greedy decoding -> [b, P + max_new_tokens] (prompt, then the new tokens).
        Encoder-decoder: input_ids is the decoder prompt (None: one start token, id 0).
        Call model.eval() first when the model has dropout."""
        if input_ids is None:
            b = encoder_input_ids.shape[0]
            input_ids = torch.zeros(b, 1, dtype=torch.long, device=encoder_input_ids.device)
        out = input_ids
        cache = self.new_cache() if use_cache else None
        for step in range(max_new_tokens):
            if cache is None:
                logits = self.full_logits(out, encoder_input_ids, encoder_attention_mask)
            elif step == 0:
                logits = self.prefill(
                    input_ids,
                    cache,
                    encoder_input_ids=encoder_input_ids,
                    encoder_attention_mask=encoder_attention_mask,
                )
            else:
                logits = self.decode_step(out[:, -1:], cache)
            next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # [b, 1]
            out = torch.cat([out, next_id], dim=1)
        return out

    def full_logits(self, ids, encoder_input_ids=None, encoder_attention_mask=None):
        """Logits of a full forward over the decoder tokens ``ids`` (no cache)."""
        if self.spec.arch == "encoder-decoder":
            return self(
                encoder_input_ids, attention_mask=encoder_attention_mask, decoder_input_ids=ids
            ).logits
        return self(ids).logits


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """normal(0, std) for linear, embedding, conv weights and tokens; zero biases; norms 1."""
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            if name == "bias" and not isinstance(mod, nn.Embedding):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)  # norm weights
            else:
                nn.init.normal_(p, 0.0, std)


def build_model(
    spec: ModelSpec,
    workload: Workload | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Transformer:
    """The reference model of ``spec`` for ``workload`` (attention_impl, pattern, window,
    dropout, checkpointing). dtype: default the workload's float weight dtype, else fp32.
    On device="meta" nothing is allocated or initialized."""
    if dtype is None:
        name = workload.dtype if workload is not None else "fp32"
        dtype = _TORCH_DTYPES.get(name, None) or torch_dtype(workload.compute_dtype)
    with torch.device(device or "cpu"):
        model = Transformer(spec, workload)
    if torch.device(device or "cpu").type != "meta":
        init_weights(model)
    model = model.to(dtype=dtype)
    if workload is not None and workload.finetune != "full":  # issue 20: adapters, frozen base
        from reference_model.lora import apply_finetune

        apply_finetune(model, spec, workload)
    return model
