"""Separate biases (spec.qkv_bias, o_bias, ffn_bias apart from bias: Qwen2's q/k/v biases)
in the reference model: parameters, FLOPs, every saved term, the KV cache and the peaks
against the measurement (tgauge.validate.validate_point), as tests/reference_model/
test_ref_parallel.py does for parallel blocks."""

from __future__ import annotations

import random

import pytest
from ref_specs import GPT, LLAMA, fixed_params, workload
from test_ref_parallel import BASES, _check

BIASES = {
    "qwen": {"qkv_bias": True},  # on LLAMA (bias=False)
    "gpt-no-o-ffn": {"o_bias": False, "ffn_bias": False},  # on GPT (bias=True)
}
assert BASES == {"gpt": GPT, "llama": LLAMA}


def _bias_check(base: str, extra: dict, wl) -> None:
    _check(base, "none", wl, extra)


FIXED = [
    ("llama", BIASES["qwen"], workload("train", 2, 16, "eager"), False),
    ("gpt", BIASES["gpt-no-o-ffn"], workload("train", 1, 8, "fused", autocast="bf16"), False),
    ("llama", BIASES["qwen"], workload("decode", 2, 12, "eager"), False),
    ("gpt", BIASES["gpt-no-o-ffn"], workload("prefill", 2, 16, "fused"), True),
    ("llama", BIASES["qwen"], workload("train", 2, 16, "eager", autocast="bf16"), True),
]


@pytest.mark.parametrize(
    "base,extra,wl",
    fixed_params(FIXED),
)
def test_separate_biases_match_measurement(base, extra, wl) -> None:
    _bias_check(base, extra, wl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_separate_biases_random_points(seed) -> None:
    rng = random.Random(2210 + seed)
    mode = rng.choice(["train", "train", "prefill", "decode"])
    kw = rng.choice([{}, {"autocast": "bf16"}]) if mode == "train" else {}
    wl = workload(
        mode, rng.choice([1, 2, 3]), rng.choice([8, 16]), rng.choice(["eager", "fused"]), **kw
    )
    extra = {f: rng.choice([True, False]) for f in ("qkv_bias", "o_bias", "ffn_bias")}
    _bias_check(rng.choice(list(BASES)), extra, wl)


def test_head_dim_apart_from_d_model_over_heads() -> None:
    """head_dim given (h d_h = 48 != d_model = 32: Gemma, Qwen3): exact as the default."""
    _check("llama", "none", workload("train", 2, 16, "eager"), {"head_dim": 12})


@pytest.mark.parametrize(
    "base,wl",
    [
        ("llama", workload("train", 2, 16, "eager")),
        ("gpt", workload("decode", 1, 12, "fused")),
        pytest.param("llama", workload("prefill", 2, 16, "fused"), marks=pytest.mark.slow),
        pytest.param(
            "gpt", workload("train", 1, 16, "fused", autocast="bf16"), marks=pytest.mark.slow
        ),
    ],
    ids=["llama-train", "gpt-decode", "llama-prefill", "gpt-train-autocast"],
)
def test_embedding_scale_matches_measurement(base, wl) -> None:
    """embed_scale (Gemma: embeddings times sqrt(d_model), Transformer.embed_tokens)."""
    _check(base, "none", wl, {"embed_scale": True})
