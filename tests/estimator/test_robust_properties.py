"""Random specs and workloads through the library: the only failures allowed are SpecError
(UnsupportedError included) from the functions, and pydantic's ValidationError when the
random fields cannot even build a ModelSpec / Workload. Every result is non-negative."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from estimator.estimate import estimate
from estimator.plan.capacity import Sharding, plan
from estimator.spec import ModelSpec, SpecError, Workload
from estimator.terms.params import params

GiB = 2**30


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


@st.composite
def spec_fields(draw: st.DrawFn) -> dict:
    """Mostly valid ModelSpec fields (so the functions are reached), sometimes not."""
    arch = draw(st.sampled_from(["encoder", "decoder", "encoder-decoder"]))
    h = draw(st.integers(1, 8))
    h_kv = draw(st.sampled_from([d for d in range(1, h + 1) if h % d == 0]))
    d_h = draw(st.integers(1, 16)) * 2
    fields = {
        "arch": arch,
        "n_encoder_layers": draw(st.integers(1, 3)) if arch != "decoder" else 0,
        "n_decoder_layers": draw(st.integers(1, 3)) if arch != "encoder" else 0,
        "d_model": h * d_h,
        "n_heads": h,
        "n_kv_heads": h_kv,
        "d_ff": draw(st.integers(1, 128)),
        "vocab_size": draw(st.integers(1, 200)),
        "max_seq_len": draw(st.integers(1, 300)),
        "activation": draw(st.sampled_from(["relu", "gelu", "swiglu", "geglu"])),
        "norm": draw(st.sampled_from(["layernorm", "rmsnorm"])),
        "norm_position": draw(st.sampled_from(["pre", "post"])),
        "position": draw(st.sampled_from(["sinusoidal", "learned", "rotary", "relative", "none"])),
        "bias": draw(st.booleans()),
        "tie_embeddings": draw(st.booleans()),
        "final_norm": draw(st.booleans()),
        "embed_norm": draw(st.booleans()),
    }
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "head_dim": st.integers(1, 32),
                "sliding_window": st.integers(1, 64),
                "n_token_types": st.integers(0, 3),
                "pooler": st.booleans(),
                "lm_head": st.booleans(),
                "position_offset": st.integers(0, 3),
            },
        )
    )
    if arch == "encoder" and draw(st.booleans()):  # a ViT: patch input, no vocabulary
        size, patch = draw(st.sampled_from([(16, 4), (32, 8), (32, 16)]))
        fields |= {"image_size": size, "patch_size": patch, "n_channels": 3, "vocab_size": None,
                   "lm_head": False, "max_seq_len": (size // patch) ** 2 + 1}  # fmt: skip
    return fields | extra


@st.composite
def workload_fields(draw: st.DrawFn) -> dict:
    """Mostly valid Workload fields, sometimes not."""
    mode = draw(st.sampled_from(["train", "prefill", "decode"]))
    ints = ["int8", "int4"] if mode != "train" else []
    dtype = draw(st.sampled_from(["fp32", "fp16", "bf16", *ints]))
    fields = {
        "mode": mode,
        "batch_size": draw(st.integers(1, 4)),
        "seq_len": draw(st.integers(1, 300)),
        "dtype": dtype,
        "optimizer": draw(st.sampled_from(["adamw", "adam", "sgd", "sgd-momentum", "none"])),
        "checkpointing": draw(st.sampled_from(["none", "full"])),
        "attention_impl": draw(st.sampled_from(["eager", "fused"])),
        "kv_cache": draw(st.booleans()),
        "causal_flops": draw(st.sampled_from(["full", "triangle"])),
        "device": draw(st.sampled_from(["cuda", "cpu"])),
        "master_weights": dtype in ("fp16", "bf16") and draw(st.booleans()),
        "dropout": draw(st.sampled_from([0.0, 0.1])),
    }
    pattern = draw(st.sampled_from([None, "full", "causal", "sliding_window", "chunked"]))
    if pattern is not None:
        fields["attention_pattern"] = pattern
        if pattern in ("sliding_window", "chunked"):
            fields["window"] = draw(st.integers(1, 16))
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "target_len": st.integers(1, 64),
                "prompt_len": st.integers(1, 64),
                "new_tokens": st.integers(1, 8),
                "compute_dtype": st.sampled_from(["fp32", "fp16", "bf16"]),
                "kv_cache_dtype": st.sampled_from(["fp32", "fp16", "bf16", "int8", "int4"]),
            },
        )
    )
    return fields | extra


SPECS, WORKLOADS = spec_fields(), workload_fields()


def _build(spec_fields: dict, workload_fields: dict) -> tuple[ModelSpec, Workload] | None:
    try:
        return ModelSpec.model_validate(spec_fields), Workload.model_validate(workload_fields)
    except ValidationError:  # the documented input error at construction
        return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_fields=SPECS, workload_fields=WORKLOADS)
def test_library_fails_only_with_spec_errors_on_random_input(spec_fields, workload_fields):
    built = _build(spec_fields, workload_fields)
    if built is None:
        return
    spec, w = built
    assert params(spec).total > 0
    try:
        est = estimate(spec, w)
    except SpecError:
        return
    for breakdown in (est.memory, est.flops, est.kv_cache):
        assert all(v >= 0 for v in breakdown.terms.values()), breakdown.terms
    # the term functions run directly give the same estimate, term by term
    assert estimate(spec, w, direct=True).model_dump() == est.model_dump()
    assert est.peak_memory_bytes > 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec_fields=SPECS,
    workload_fields=WORKLOADS,
    usable_gib=st.sampled_from([0.001, 1, 80]),
    n_gpus=st.sampled_from([1, 2, 8]),
    zero=st.sampled_from([0, 1, 2, 3]),
    tp=st.sampled_from([1, 2]),
)
def test_plan_fails_only_with_spec_errors_on_random_input(
    spec_fields, workload_fields, usable_gib, n_gpus, zero, tp
):
    built = _build(spec_fields, workload_fields)
    if built is None:
        return
    spec, w = built
    try:
        result = plan(
            spec, w, int(usable_gib * GiB), "test", Sharding(n_gpus=n_gpus, zero=zero, tp=tp)
        )
    except SpecError:
        return
    assert result.fit.peak_bytes > 0
