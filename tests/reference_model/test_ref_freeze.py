"""finetune='freeze' on the reference model (issue 20): with the embeddings training, the saved
activations, FLOPs and peak the estimator predicts (estimator/rules/freeze.py) hold against the
measurement (tgauge.validate.validate_point, fp32 CPU); frozen embeddings keep the full-training
upper bound, which the measurement stays under."""

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
    ],
)
def test_freeze_saved_set_is_exact(arch, frozen, b) -> None:
    _check(arch, frozen, b)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_freeze_random_patterns_are_exact(seed) -> None:
    """A seeded draw of frozen module kinds (the embeddings training), b = 1 or 3."""
    rng = random.Random(seed)
    arch = rng.choice([LLAMA, GPT])
    names = [n for n, _ in named_param_shapes(spec(**arch)) if n != "embed"]
    frozen = tuple(rng.sample(names, rng.randint(1, len(names) - 1)))
    _check(arch, frozen, rng.choice([1, 3]))


@pytest.mark.slow
def test_frozen_embeddings_stay_an_upper_bound() -> None:
    w = Workload(mode="train", finetune="freeze", frozen=("embed", "decoder.layers.ffn.*"),
                 batch_size=2, seq_len=16)  # fmt: skip
    point = validate_point(spec(**LLAMA), w)
    rows = {r.term: r for r in point.rows}
    act = rows["memory.activations.total"]
    assert act.predicted > act.measured
    assert rows["peak_memory"].predicted >= rows["peak_memory"].measured
