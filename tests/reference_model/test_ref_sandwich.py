"""Sandwich norms (spec.sublayer_norm='sandwich': x + OutNorm(F(Norm(x))), Gemma 2/3) in the
reference model: parameters (attn_out_norm, ffn_out_norm), FLOPs, every saved term, the KV
cache and the peaks against the measurement (tgauge.validate.validate_point), as tests/
reference_model/test_ref_layer_pattern.py does for per-layer patterns; seeded random points
combine it with per-layer patterns, QK-norm and the other issue-22 features."""

from __future__ import annotations

import random

import pytest
import torch
from ref_specs import LLAMA, fixed_params, spec, workload
from test_ref_layer_pattern import PATTERNS, _check

from estimator import estimate
from estimator.spec import UnsupportedError, Workload
from reference_model import build_model

SW = {"sublayer_norm": "sandwich"}

FIXED = [  # (base, fields, workload, slow)
    ("llama", SW, workload("train", 2, 12, "eager"), False),
    ("gpt", SW, workload("train", 1, 16, "fused"), False),  # LayerNorm out norms
    ("llama", SW, workload("prefill", 1, 12, "fused"), False),
    ("gpt", SW, workload("decode", 2, 12, "eager"), False),
    ("llama", SW, workload("train", 1, 48, "eager"), True),
    ("gpt", SW, workload("train", 2, 12, "eager", checkpointing="full"), True),
    ("llama", SW, workload("train", 2, 12, "eager", checkpointing="selective"), True),
    ("llama", {**SW, "n_kv_heads": 2}, workload("decode", 1, 40, "fused"), True),
    (
        "llama",
        {**SW, "qk_norm": "head", **PATTERNS["alternate"]},
        workload("train", 2, 12, "eager"),
        True,
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "base,fields,wl",
    fixed_params(FIXED),
)
def test_sandwich_norms_match_measurement(base, fields, wl) -> None:
    _check(base, fields, wl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_sandwich_random_points(seed) -> None:
    rng = random.Random(2250 + seed)
    fields = {**SW, "n_kv_heads": rng.choice([1, 2, 4])}
    others = [PATTERNS["alternate"], PATTERNS["global-first"], {"qk_norm": "head"},
              {"embed_scale": True}, {"ffn_bias": False}]  # fmt: skip
    fields.update(rng.choice([{}, *others]))
    mode = rng.choice(["train", "train", "prefill", "decode"])
    kw = rng.choice([{}, {"checkpointing": "full"}]) if mode == "train" else {}
    b, s = rng.choice([1, 2, 3]), rng.choice([8, 12, 16])
    wl = workload(mode, b, s, rng.choice(["eager", "fused"]), **kw)
    _check(rng.choice(["gpt", "llama"]), fields, wl)


def test_out_norm_normalizes_the_branch_before_the_residual_add() -> None:
    """x + OutNorm(F(Norm(x))): with the out norm's weight zeroed the layer is the identity."""
    torch.manual_seed(0)
    model = build_model(spec(**{**LLAMA, **SW}))
    layer = model.decoder.layers[0]
    torch.nn.init.zeros_(layer.attn_out_norm.weight)
    torch.nn.init.zeros_(layer.ffn_out_norm.weight)
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(layer(x, 0, model.decoder.pos, None, None, None, None), x)


@pytest.mark.parametrize(
    "fields,wl,named",
    [
        (SW, Workload(mode="train", batch_size=1, seq_len=8, dropout=0.1), "sandwich"),
        (
            {"sublayer_norm": "output"},
            Workload(mode="train", batch_size=1, seq_len=8),
            "sublayer_norm='output'",
        ),  # fmt: skip
    ],
)
def test_unmodelled_sublayer_norms_are_refused_by_name(fields, wl, named) -> None:
    s = spec(**{**LLAMA, **fields})
    with pytest.raises(UnsupportedError, match=named):
        estimate(s, wl)
    if fields["sublayer_norm"] == "output":  # OLMo 2's output-only norms: not built
        with pytest.raises(UnsupportedError, match=named):
            build_model(s)
