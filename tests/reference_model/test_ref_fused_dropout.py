"""Fused attention with dropout on CPU (issue 22f): torch's CPU backend choice rejects flash
for dropout_p > 0, so scaled_dot_product_attention runs its math ops (estimator/rules/
reference/saved.py math_sdpa): the saved set (q, k^T scaled, softmax output, dropout mask and
output, v), o_proj's copy of the merged heads, the FLOPs (no recompute) and the backward walk
hold against the measurement (tgauge.validate.validate_point, fp32 CPU)."""

from __future__ import annotations

import random

import pytest
from ref_specs import BART, BERT, GPT, LLAMA, T5, spec

from estimator.spec import Workload
from tgauge.validate import validate_point

ARCHS = {"gpt": GPT, "llama_gqa": {**LLAMA, "n_kv_heads": 2}, "bert": BERT, "bart": BART, "t5": T5}


def _check(arch: dict, b: int, s: int) -> None:
    w = Workload(mode="train", dropout=0.1, attention_impl="fused", batch_size=b, seq_len=s,
                 target_len=7 if arch.get("arch") == "encoder-decoder" else None)  # fmt: skip
    point = validate_point(spec(**arch), w)
    rows = [r for r in point.rows if r.measured is not None]
    acts = [r for r in rows if r.term.startswith("memory.activations")]
    assert any(r.term.endswith("self_attn.sdpa") for r in acts)
    assert [r for r in acts if r.predicted != r.measured] == []  # every term, o_proj included
    assert [r for r in rows if r.term.startswith("flops") and r.verdict != "exact"] == []
    assert point.worst in ("exact", "within"), [r for r in point.rows if r.verdict == "off"]
    assert point.peak_phase_predicted == point.peak_phase_measured


@pytest.mark.parametrize("seed", range(3))
def test_fused_dropout_random_points_are_exact(seed) -> None:
    """A seeded draw of a decoder (GPT, or Llama with GQA), b = 1 or > 1, s in 5..24."""
    rng = random.Random(seed)
    arch = ARCHS[rng.choice(["gpt", "llama_gqa"])]
    _check(arch, 1 if seed == 0 else rng.randint(2, 3), rng.randint(5, 24))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_fused_dropout_random_archs_are_exact(seed) -> None:
    """Encoders (BERT: full pattern) and encoder-decoders (BART, T5: cross-attention, relative
    bias) too."""
    rng = random.Random(100 + seed)
    _check(ARCHS[rng.choice(sorted(ARCHS))], rng.randint(1, 3), rng.randint(5, 24))
