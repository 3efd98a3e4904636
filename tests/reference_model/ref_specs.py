"""Small specs covering every architecture option, shared by the reference-model tests."""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from estimator.spec import ModelSpec

BASE = dict(d_model=32, n_heads=4, d_ff=48, vocab_size=61, max_seq_len=64)


def spec(**kw) -> ModelSpec:
    arch = kw.get("arch", "decoder")
    layers = {
        "decoder": {"n_decoder_layers": 2},
        "encoder": {"n_encoder_layers": 2},
        "encoder-decoder": {"n_encoder_layers": 2, "n_decoder_layers": 2},
    }[arch]
    return ModelSpec(**{**BASE, "arch": arch, **layers, **kw})


GPT = dict(arch="decoder", position="learned", activation="gelu")
LLAMA = dict(
    arch="decoder",
    position="rotary",
    activation="swiglu",
    norm="rmsnorm",
    bias=False,
    tie_embeddings=False,
)
T5 = dict(
    arch="encoder-decoder",
    position="relative",
    norm="rmsnorm",
    bias=False,
    relative_buckets=8,
    relative_max_distance=20,
    activation="relu",
)
BART = dict(
    arch="encoder-decoder",
    position="learned",
    position_offset=2,
    embed_norm=True,
    norm_position="post",
    final_norm=False,
)
VASWANI = dict(
    arch="encoder-decoder",
    position="sinusoidal",
    activation="relu",
    norm_position="post",
    final_norm=False,
)
BERT = dict(
    arch="encoder",
    position="learned",
    embed_norm=True,
    n_token_types=2,
    pooler=True,
    norm_position="post",
    final_norm=False,
)
VIT = dict(
    arch="encoder",
    position="learned",
    vocab_size=None,
    image_size=16,
    patch_size=4,
    n_channels=3,
    pooler=True,
    max_seq_len=17,
)

# decoder-bearing specs for decoding tests
DECODERS = {
    "gpt": GPT,
    "llama_gqa": {**LLAMA, "n_kv_heads": 2},
    "mqa_sinusoidal_geglu": dict(
        arch="decoder", position="sinusoidal", n_kv_heads=1, activation="geglu"
    ),
    "relative_decoder": dict(
        arch="decoder", position="relative", relative_buckets=8, relative_max_distance=20
    ),
    "post_norm_none": dict(arch="decoder", position="none", norm_position="post"),
    "mistral_window": {**LLAMA, "n_kv_heads": 2, "sliding_window": 5},
    "t5": T5,
    "bart": BART,
    "vaswani_gqa": {**VASWANI, "n_kv_heads": 2},
}


def measured_terms(model: torch.nn.Module) -> dict[str, int]:
    """Own parameters (recurse=False) per stripped module path, tied storage at first owner."""
    seen: set[int] = set()
    terms: dict[str, int] = defaultdict(int)
    for path, mod in model.named_modules():
        for p in mod.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            terms[re.sub(r"\.\d+(?=\.|$)", "", path)] += p.numel()
    return dict(terms)
