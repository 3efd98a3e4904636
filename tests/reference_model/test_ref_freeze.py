"""finetune='freeze' on the reference model (issue 20): with the embeddings training, the saved
activations, FLOPs and peak the estimator predicts (estimator/rules/freeze.py) hold against the
measurement (tgauge.validate.validate_point, fp32 CPU), and with frozen embeddings where layer
0's attn_norm trains; frozen embeddings and attn_norm keep the full-training upper bound, which
the measurement stays under."""

from __future__ import annotations

import random

import pytest
from ref_specs import GPT, LLAMA, spec

from estimator.spec import Workload
from estimator.terms.finetune import named_param_shapes
from tgauge.validate import validate_point


def _check(arch: dict, frozen: tuple, b: int) -> None:
    point = validate_point(spec(**arch), Workload(mode="train", finetune="freeze", frozen=frozen,
                                                  batch_size=b, seq_len=16))  # fmt: skip
    rows = {r.term: r for r in point.rows}
    assert rows["memory.activations.total"].predicted == rows["memory.activations.total"].measured
    assert point.worst == "within", [r for r in point.rows if r.verdict != "within"]
    assert point.peak_phase_predicted == point.peak_phase_measured


@pytest.mark.parametrize(
    ("arch", "frozen", "b"),
    [
        (LLAMA, ("decoder.layers.self_attn.*",), 1),
        (GPT, ("decoder.layers.self_attn.*", "decoder.pos"), 2),
        (LLAMA, ("embed", "decoder.layers.self_attn.*", "lm_head"), 1),  # layer 0's norm
    ],
)
def test_freeze_saved_set_is_exact(arch, frozen, b) -> None:
    _check(arch, frozen, b)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_freeze_random_patterns_are_exact(seed) -> None:
    """A seeded draw of frozen module kinds (the embeddings training, or frozen with layer 0's
    attn_norm training), b = 1 or 3."""
    rng = random.Random(seed)
    arch = rng.choice([LLAMA, GPT])
    names = [n for n, _ in named_param_shapes(spec(**arch))
             if n not in ("embed", "decoder.pos", "decoder.layers.attn_norm")]  # fmt: skip
    frozen = tuple(rng.sample(names, rng.randint(1, len(names) - 1)))
    if seed % 2:
        frozen += ("embed", "decoder.pos") if arch is GPT else ("embed",)
    _check(arch, frozen, rng.choice([1, 3]))


@pytest.mark.slow
def test_frozen_embeddings_and_first_norm_stay_an_upper_bound() -> None:
    w = Workload(mode="train", finetune="freeze", batch_size=2, seq_len=16,
                 frozen=("embed", "decoder.layers.attn_norm", "decoder.layers.ffn.*"))  # fmt: skip
    point = validate_point(spec(**LLAMA), w)
    rows = {r.term: r for r in point.rows}
    act = rows["memory.activations.total"]
    assert act.predicted > act.measured
    assert rows["peak_memory"].predicted >= rows["peak_memory"].measured
