"""Workload.autocast (issue 10): validation, the rule variant it selects, its unchecked notes.
Its saved activations and training peak against measurement: the autocast cases of
tests/tgauge/test_validation_matrix.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from estimator.estimate import estimate
from estimator.rules.autocast import autocast_linear_saved
from estimator.rules.reference.saved import plain_linear_saved
from estimator.rules.registry import rule
from estimator.shapes import resolve
from estimator.spec import ModelSpec, UnsupportedError, Workload

GPT: dict[str, Any] = dict(
    arch="decoder", n_decoder_layers=2, d_model=8, n_heads=2, d_ff=16, vocab_size=10,
    max_seq_len=16,
)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "bf16"}, r"dtype='bf16' is invalid: autocast='bf16' needs fp32 weights"),
        ({"dtype": "bf16", "master_weights": True}, r"dtype='bf16' is invalid"),
        ({"compute_dtype": "bf16"}, r"compute_dtype='bf16' is invalid: autocast='bf16'"),
    ],
)
def test_autocast_needs_fp32_weights_and_compute(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        Workload(autocast="bf16", **kwargs)


def test_autocast_rejects_a_value_outside_bf16_fp16() -> None:
    with pytest.raises(ValidationError, match="autocast"):
        Workload(autocast="fp8")


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_autocast_is_modelled_for_training_only(mode: str) -> None:
    with pytest.raises(UnsupportedError, match=f"mode='train' only, not mode='{mode}'"):
        estimate(ModelSpec(**GPT), Workload(mode=mode, seq_len=8, autocast="bf16"))


@pytest.mark.parametrize(
    ("spec_update", "workload_update", "why"),
    [
        ({"arch": "encoder-decoder", "n_encoder_layers": 2}, {}, "encoder-decoder"),
        ({"position": "relative"}, {}, "relative position bias"),
        ({}, {"dropout": 0.1}, "dropout"),
        ({}, {"checkpointing": "full"}, "checkpointing"),
        ({}, {"attention_pattern": "chunked", "window": 4, "attention_impl": "fused"}, "chunked"),
    ],
)
def test_autocast_refuses_what_it_does_not_model(spec_update, workload_update, why) -> None:
    spec = ModelSpec(**{**GPT, **spec_update})
    with pytest.raises(UnsupportedError, match=re.escape(why)):
        estimate(spec, Workload(seq_len=8, autocast="bf16", **workload_update))


def test_autocast_selects_the_linear_rule_variant() -> None:
    spec = ModelSpec(**GPT)
    amp, fp32 = resolve(spec, Workload(autocast="bf16")), resolve(spec, Workload())
    assert rule("saved.linear", spec, amp) is autocast_linear_saved
    assert rule("saved.linear", spec, fp32) is plain_linear_saved
    assert rule("saved.linear", spec) is plain_linear_saved


def test_autocast_saves_a_low_input_cast_per_linear_and_the_weight_copy() -> None:
    # n = 32 tokens, q_proj 8 -> 8: its own bf16 cast [32, 8] and the bf16 weight [8, 8]
    spec = ModelSpec(**GPT)
    w = resolve(spec, Workload(autocast="bf16"))
    assert autocast_linear_saved(spec, w, 32, 8, 8, True, False) == 32 * 8 * 2 + 8 * 8 * 2
    # o_proj's input is a matmul's output, counted where it is made: the weight copy only
    assert autocast_linear_saved(spec, w, 32, 8, 8, False, False) == 8 * 8 * 2


def test_autocast_keeps_states_fp32_and_shrinks_activations_against_fp32() -> None:
    spec = ModelSpec(**GPT)
    fp32 = estimate(spec, Workload(batch_size=2, seq_len=16))
    ac = estimate(spec, Workload(batch_size=2, seq_len=16, autocast="bf16"))
    for group in ("weights", "gradients", "optimizer"):
        assert ac.memory.group(group) == fp32.memory.group(group)
    # the eager scores and probabilities are bf16: half their fp32 bytes
    key = "activations.decoder.layers.self_attn.mix"
    assert ac.memory.terms[key] * 2 == fp32.memory.terms[key]


def test_unchecked_lists_the_cuda_only_autocast_differences() -> None:
    spec = ModelSpec(**GPT)
    cuda = estimate(spec, Workload(seq_len=8, autocast="fp16", device="cuda")).unchecked
    assert any("CPU autocast op lists" in u and "softmax in fp32" in u for u in cuda)
    assert any("GradScaler" in u for u in cuda)
    cpu = estimate(spec, Workload(seq_len=8, autocast="bf16", device="cpu")).unchecked
    assert not any("autocast" in u for u in cpu)
