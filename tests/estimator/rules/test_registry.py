"""The per-(module kind, implementation) registry of estimator/rules/registry.py."""

from __future__ import annotations

import pytest

from estimator import estimate
from estimator.rules.registry import overrides, register, rule
from estimator.spec import ModelSpec, Workload

SPEC = ModelSpec(name="t", arch="decoder", n_layers=2, d_model=64, n_heads=4, d_ff=128,
                 vocab_size=100, max_seq_len=64)  # fmt: skip


def test_a_kind_without_an_override_falls_back_to_the_reference_rule() -> None:
    assert rule("saved.eager_mask", "no-such-implementation") is rule("saved.eager_mask", SPEC)


def test_hf_lists_what_it_does_differently() -> None:
    assert "saved.eager_mask" in overrides("hf")
    assert overrides("reference") == []


def test_two_rules_for_one_key_are_refused() -> None:
    from estimator.rules.registry import RULES

    register("test.kind", "reference")(lambda: 1)
    try:
        with pytest.raises(ValueError, match="two rules"):
            register("test.kind", "reference")(lambda: 2)
    finally:
        del RULES[("test.kind", "reference")]


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no rule"):
        rule("no.such.kind", SPEC)


def test_hf_eager_attention_keeps_no_mask_per_layer() -> None:
    """HF adds one float mask to the scores (an add saves nothing); our masked_fill saves its
    bool [s, s] in every layer: the two implementations differ by exactly L s^2 bytes."""
    w = Workload(batch_size=2, seq_len=32, attention_impl="eager")

    def saved(spec: ModelSpec) -> int:
        terms = estimate(spec, w).memory.terms
        return sum(v for k, v in terms.items() if k.startswith("activations."))

    assert saved(SPEC) - saved(SPEC.model_copy(update={"implementation": "hf"})) == 2 * 32 * 32
