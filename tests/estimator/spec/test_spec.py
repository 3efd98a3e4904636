"""Every invalid input named in estimator/spec/model.py and estimator/spec/workload.py fails with
a message naming field and value."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from estimator.spec import ModelSpec, SpecError, Workload, check_compatible

GPT: dict[str, Any] = dict(
    arch="decoder", n_decoder_layers=2, d_model=8, n_heads=2, d_ff=16, vocab_size=10,
    max_seq_len=16,
)  # fmt: skip
VIT: dict[str, Any] = dict(
    arch="encoder", n_encoder_layers=1, d_model=8, n_heads=2, d_ff=16, max_seq_len=5,
    image_size=8, patch_size=4, n_channels=3,
)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_model": 10, "n_heads": 3}, "n_heads=3 is invalid: must divide d_model=10"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads=3 is invalid: must divide n_heads=4"),
        ({"n_encoder_layers": 2}, "n_encoder_layers=2 is invalid: arch='decoder' needs 0"),
        ({"n_decoder_layers": 0}, "n_decoder_layers=0 is invalid: arch='decoder' needs at least"),
        ({"arch": "encoder", "n_decoder_layers": 0}, "n_encoder_layers=0 is invalid"),
        ({"arch": "encoder-decoder"}, "n_encoder_layers=0 is invalid"),
        ({"position": "rotary", "head_dim": 3}, "head_dim=3 is invalid: rotary positions"),
        ({"vocab_size": None}, "vocab_size=None is invalid"),
        ({"image_size": 8}, "patch_size=None is invalid: patch input needs image_size"),
        ({"image_size": 8, "patch_size": 4, "n_channels": 3}, "arch='decoder' is invalid"),
    ],
)
def test_invalid_model_spec_names_field_and_value(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelSpec(**{**GPT, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": 10}, "patch_size=4 is invalid: must divide image_size=10"),
        ({"max_seq_len": 4}, "max_seq_len=4 is invalid: must be >= 5"),
        ({"lm_head": True}, "lm_head=True is invalid: an LM head needs vocab_size"),
        ({"n_token_types": 2}, "n_token_types=2 is invalid"),
    ],
)
def test_invalid_patch_spec_names_field_and_value(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelSpec(**{**VIT, **changes})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("d_model", 0),
        ("d_model", -8),
        ("n_heads", 0),
        ("d_ff", -1),
        ("vocab_size", 0),
        ("max_seq_len", 0),
        ("n_kv_heads", 0),
        ("n_decoder_layers", -1),
        ("activation", "tanh"),
        ("norm", "batchnorm"),
        ("position", "alibi"),
        ("arch", "moe"),
        ("n_leyers", 2),
    ],
)
def test_bad_model_spec_field_is_named_with_its_value(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ModelSpec(**{**GPT, field: value})
    errors = info.value.errors()
    assert any(e["loc"] == (field,) and e["input"] == value for e in errors), errors


def test_n_layers_alias_fills_the_model_s_stack() -> None:
    fields = {k: v for k, v in GPT.items() if k != "n_decoder_layers"}
    spec = ModelSpec(**fields, n_layers=3)
    assert (spec.n_encoder_layers, spec.n_decoder_layers) == (0, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "train", "dtype": "int4"}, "dtype='int4' is invalid: training needs"),
        ({"mode": "train", "dtype": "int8"}, "dtype='int8' is invalid: training needs"),
        ({"master_weights": True, "dtype": "fp32"}, "master_weights=True is invalid"),
        ({"attention_pattern": "sliding_window"}, "window=None is invalid"),
        ({"attention_pattern": "chunked"}, "window=None is invalid"),
    ],
)
def test_invalid_workload_names_field_and_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Workload(**kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("seq_len", -1), ("dropout", 1.0), ("mode", "serve"), ("dtpye", "fp16")],
)
def test_bad_workload_field_is_named_with_its_value(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Workload(**{field: value})
    assert any(e["loc"] == (field,) and e["input"] == value for e in info.value.errors())


def test_check_compatible_rejects_decode_on_an_encoder() -> None:
    enc = ModelSpec(**{**GPT, "arch": "encoder", "n_encoder_layers": 2, "n_decoder_layers": 0})
    with pytest.raises(SpecError, match=re.escape("mode='decode' is invalid for arch='encoder'")):
        check_compatible(enc, Workload(mode="decode", seq_len=4))


def test_check_compatible_rejects_target_len_patch_length_and_long_learned_inputs() -> None:
    gpt, vit = ModelSpec(**GPT), ModelSpec(**VIT)
    with pytest.raises(SpecError, match=re.escape("target_len=4 is only for encoder-decoder")):
        check_compatible(gpt, Workload(seq_len=4, target_len=4))
    with pytest.raises(SpecError, match=re.escape("seq_len=7 is invalid for patch input")):
        check_compatible(vit, Workload(seq_len=7))
    with pytest.raises(SpecError, match=re.escape("seq_len=17 is invalid")):
        check_compatible(gpt, Workload(seq_len=17))
    with pytest.raises(SpecError, match=re.escape("seq_len=20 is invalid")):
        check_compatible(gpt, Workload(mode="decode", seq_len=16, new_tokens=4))
    check_compatible(gpt, Workload(seq_len=16))  # the limit itself is fine
    check_compatible(vit, Workload(seq_len=5))


def test_rotary_models_end_at_max_seq_len_unless_rope_scaled() -> None:
    from estimator.spec import context_limit
    from estimator.spec.presets import get_preset

    llama3 = get_preset("llama-3-8b")  # max_position_embeddings 8192
    with pytest.raises(
        SpecError, match=re.escape("seq_len=9000 is invalid: llama-3-8b has rotary")
    ):
        check_compatible(llama3, Workload(seq_len=9000))
    check_compatible(llama3, Workload(seq_len=8192))  # the limit itself is fine
    check_compatible(llama3, Workload(seq_len=9000, rope_scaling=2.0))
    assert context_limit(llama3, Workload(rope_scaling=4.0)) == 4 * 8192
    with pytest.raises(SpecError, match=re.escape("seq_len=8193 is invalid")):
        check_compatible(llama3, Workload(mode="decode", prompt_len=8000, new_tokens=193))
    with pytest.raises(ValidationError):
        Workload(rope_scaling=0.5)  # a factor below 1 would shrink the context


def test_rope_scaling_is_refused_for_other_positions() -> None:
    with pytest.raises(SpecError, match="it has learned positions, not rotary"):
        check_compatible(ModelSpec(**GPT), Workload(seq_len=4, rope_scaling=2.0))


@pytest.mark.parametrize("kv_dtype", ["fp8", "fp8_e4m3", "fp8_e5m2"])
def test_fp8_kv_cache_dtypes_are_one_byte(kv_dtype: str) -> None:
    from estimator.spec.dtypes import nbytes

    w = Workload(mode="decode", dtype="bf16", kv_cache_dtype=kv_dtype)
    assert w.kv_cache_dtype == kv_dtype and nbytes(10, kv_dtype) == 10
