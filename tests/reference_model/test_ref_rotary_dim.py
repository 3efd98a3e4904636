"""Partial rotary (spec.rotary_dim r < d_h: the first r dims of each head rotated, GPT-NeoX,
Phi-3) in the reference model: parameters, FLOPs, every saved term (cos, sin [s, r]; under
fused attention o_proj's copy of the merged heads, q being torch.cat's own layout), the KV
cache and the peaks against the measurement (tgauge.validate.validate_point), as tests/
reference_model/test_ref_layer_pattern.py does; seeded random points combine it with the
other issue-22 features the reference builds."""

from __future__ import annotations

import random

import pytest
import torch
from ref_specs import LLAMA, fixed_params, spec, workload
from test_ref_layer_pattern import PATTERNS, _check

from reference_model import build_model

RD = {"rotary_dim": 4}  # of head_dim 8

FIXED = [  # (base, fields, workload, slow)
    ("llama", RD, workload("train", 2, 12, "eager"), False),
    ("llama", {"rotary_dim": 6, "n_kv_heads": 2}, workload("train", 1, 16, "fused"), False),
    ("llama", RD, workload("prefill", 2, 12, "fused"), False),
    ("llama", {**RD, "n_kv_heads": 2}, workload("decode", 1, 12, "eager"), False),
    ("llama", {"rotary_dim": 2, "n_kv_heads": 2}, workload("train", 1, 48, "eager"), True),
    ("llama", RD, workload("train", 2, 16, "fused", autocast="bf16"), True),
    ("llama", RD, workload("train", 2, 16, "fused", dtype="bf16"), True),
    ("llama", RD, workload("train", 2, 12, "eager", checkpointing="full"), True),
    ("llama", {**RD, "n_kv_heads": 1}, workload("decode", 1, 40, "fused"), True),
    (
        "llama",
        {**RD, "qk_norm": "head", "sublayer_norm": "sandwich"},
        workload("train", 3, 24, "fused"),
        True,
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "base,fields,wl",
    fixed_params(FIXED),
)
def test_partial_rotary_matches_measurement(base, fields, wl) -> None:
    _check(base, fields, wl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_partial_rotary_random_points(seed) -> None:
    rng = random.Random(2270 + seed)
    fields = {"rotary_dim": rng.choice([2, 4, 6]), "n_kv_heads": rng.choice([1, 2, 4])}
    others = [PATTERNS["alternate"], {"qk_norm": "head"}, {"sublayer_norm": "sandwich"},
              {"parallel_block": "two_norms"}, {"final_softcap": 3.0}]  # fmt: skip
    fields.update(rng.choice([{}, *others]))
    mode = rng.choice(["train", "train", "prefill", "decode"])
    kw = rng.choice([{}, {"checkpointing": "full"}]) if mode == "train" else {}
    b, s = rng.choice([1, 2, 3]), rng.choice([8, 12, 16])
    _check("llama", fields, workload(mode, b, s, rng.choice(["eager", "fused"]), **kw))


def test_partial_rotary_passes_the_other_dims() -> None:
    """The last d_h - r dims of each head pass unrotated; the first r rotate by r's angles
    (a full rotary of width r)."""
    torch.manual_seed(0)
    pos = build_model(spec(**{**LLAMA, **RD})).decoder.pos
    x, positions = torch.randn(2, 4, 5, 8), torch.arange(3, 8)
    y = pos(x, positions)
    torch.testing.assert_close(y[..., 4:], x[..., 4:])
    full = build_model(spec(**{**LLAMA, "head_dim": 4, "d_model": 16})).decoder.pos
    torch.testing.assert_close(y[..., :4], full(x[..., :4], positions))
