"""Small specs covering every architecture option, shared by the reference-model tests."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch

from estimator.spec import ModelSpec, Workload

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


#: rows every reference-feature test holds exact: parameters, weights, gradients, optimizer
#: states and the KV cache (besides each saved-activation term)
EXACT = ("params", "memory.weights", "memory.gradients", "memory.optimizer", "kv_cache")


def workload(mode: str, b: int, s: int, impl: str, **kw) -> Workload:
    """A point's workload; decode: a prompt of s // 2 tokens and 3 new ones."""
    if mode == "decode":
        kw = {"prompt_len": s // 2, "new_tokens": 3, **kw}
    return Workload(mode=mode, batch_size=b, seq_len=s, attention_impl=impl, **kw)


def check_rows(point, wl: Workload, peak) -> None:
    """The rows a reference-feature test asserts on a measured ``point``: it ran; EXACT and
    each saved-activation term exact; FLOPs exact (fused attention's may be not measured);
    the peak row judged by ``peak(row)`` (each test's own bar); a measured peak present."""
    assert point.status == "ok", point.notes
    eager = wl.attention_impl == "eager"
    for r in point.rows:
        if r.measured is None:
            continue
        if r.term.startswith((*EXACT, "memory.activations")):
            assert r.verdict == "exact", r
        elif r.term.startswith("flops"):
            assert r.verdict == "exact" or (not eager and r.verdict == "not measured"), r
        elif r.term == "peak_memory":
            peak(r)
    assert any(r.term == "peak_memory" and r.measured is not None for r in point.rows)


def fixed_params(rows: list) -> list:
    """pytest params of FIXED rows ``(*args, workload, slow)``: the id the string args, the
    mode and the row's index; the slow rows marked slow."""
    return [
        pytest.param(
            *args,
            id="-".join([*(a for a in args if isinstance(a, str)), args[-1].mode, str(i)]),
            marks=[pytest.mark.slow] if slow else [],
        )
        for i, (*args, slow) in enumerate(rows)
    ]
