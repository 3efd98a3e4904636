"""QK-norm (spec.qk_norm='head': a norm over each head's d_h values of q and of k, Qwen3 and
Gemma 3) in the reference model: parameters, FLOPs, every saved term (q_norm, k_norm), the KV
cache and the peaks against the measurement (tgauge.validate.validate_point), as tests/
reference_model/test_ref_layer_pattern.py does for per-layer patterns; seeded random points
combine it with per-layer patterns and the other issue-22 features the reference builds."""

from __future__ import annotations

import random

import pytest
import torch
from ref_specs import LLAMA, fixed_params, spec, workload
from test_ref_layer_pattern import PATTERNS, _check

from estimator import estimate
from estimator.spec import UnsupportedError, Workload
from reference_model import build_model

QK = {"qk_norm": "head"}
GQA = {"qk_norm": "head", "n_kv_heads": 2}

FIXED = [  # (base, fields, workload, slow)
    ("llama", GQA, workload("train", 2, 12, "eager"), False),
    ("gpt", QK, workload("train", 1, 16, "fused"), False),  # LayerNorm q_norm / k_norm
    ("llama", QK, workload("prefill", 2, 12, "fused"), False),
    ("gpt", GQA, workload("decode", 1, 12, "eager"), False),
    ("llama", GQA, workload("train", 1, 48, "fused"), True),
    ("gpt", GQA, workload("train", 2, 12, "eager", checkpointing="full"), True),
    ("llama", QK, workload("train", 2, 12, "eager", checkpointing="selective"), True),
    ("llama", QK, workload("train", 2, 12, "eager", dropout=0.1), True),
    ("llama", GQA, workload("decode", 2, 40, "fused"), True),
    ("llama", {**QK, **PATTERNS["alternate"]}, workload("train", 2, 12, "fused"), True),
]


@pytest.mark.parametrize(
    "base,fields,wl",
    fixed_params(FIXED),
)
def test_qk_norm_matches_measurement(base, fields, wl) -> None:
    _check(base, fields, wl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_qk_norm_random_points(seed) -> None:
    rng = random.Random(2240 + seed)
    fields = {**QK, "n_kv_heads": rng.choice([1, 2, 4])}
    others = [PATTERNS["alternate"], PATTERNS["global-first"], {"qkv_bias": True},
              {"head_dim": 12}, {"embed_scale": True}]  # fmt: skip
    fields.update(rng.choice([{}, *others]))
    mode = rng.choice(["train", "train", "prefill", "decode"])
    kw = rng.choice([{}, {"checkpointing": "full"}]) if mode == "train" else {}
    b, s = rng.choice([1, 2, 3]), rng.choice([8, 12, 16])
    wl = workload(mode, b, s, rng.choice(["eager", "fused"]), **kw)
    _check(rng.choice(["gpt", "llama"]), fields, wl)


def test_q_norm_normalizes_each_head() -> None:
    """With RMSNorm weights 1, q (before rotary) is each head's d_h values over their RMS."""
    torch.manual_seed(0)
    model = build_model(spec(**{**LLAMA, **QK}))
    attn = model.decoder.layers[0].self_attn
    assert attn.q_norm.weight.shape == (8,) and attn.k_norm.weight.shape == (8,)
    x = torch.randn(2, 5, 32)
    q = attn.project(attn.q_proj, "q_norm", x, attn.h)  # [b, h, s, d_h]
    raw = attn.q_proj(x).view(2, 5, 4, 8).transpose(1, 2)
    want = raw / torch.sqrt(raw.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(q, want)


@pytest.mark.parametrize(
    "fields,wl,named",
    [
        (QK, Workload(mode="train", batch_size=1, seq_len=8, autocast="bf16"), "autocast"),
        ({"qk_norm": "full"}, Workload(mode="train", batch_size=1, seq_len=8), "qk_norm='full'"),
    ],
)
def test_unmodelled_qk_norm_is_refused_by_name(fields, wl, named) -> None:
    s = spec(**{**LLAMA, **fields})
    with pytest.raises(UnsupportedError, match=named):
        estimate(s, wl)
    if fields["qk_norm"] == "full":  # OLMo 2's norm over h d_h: not built
        with pytest.raises(UnsupportedError, match="qk_norm='full'"):
            build_model(s)
