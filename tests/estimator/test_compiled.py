"""Compiled programs (estimator/compiled/) against the term functions run directly: every
point of a seeded random grid gives the same Estimate, byte for byte (its JSON), over modes,
attention, patterns, precision, checkpointing, optimizers, devices and model families, with
each structure traced once and reused at the other points of its grid."""

from __future__ import annotations

import random
from typing import Any

import pytest

from estimator.compiled import program
from estimator.estimate import assemble, estimate, raw_estimate
from estimator.shapes import resolve
from estimator.spec import ModelSpec, SpecError, Workload
from estimator.spec.hf_twins import hf_twin_spec
from estimator.spec.presets import PRESETS
from tgauge.hf_tiny import CONFIGS

SEED = 20261202
N_STRUCTURES, POINTS_EACH = 100, 10  # 1,000 points


def _random_spec(rng: random.Random, i: int) -> ModelSpec:
    """A small spec with every option of the glossary drawn at random."""
    arch = rng.choice(["encoder", "decoder", "encoder-decoder"])
    h = rng.choice([1, 2, 4])
    f: dict[str, Any] = dict(
        name=f"rand{i}", arch=arch, d_model=h * rng.choice([2, 4, 8]), n_heads=h,
        n_kv_heads=rng.choice([x for x in (1, 2, h) if h % x == 0]),
        d_ff=rng.choice([8, 24]), vocab_size=rng.choice([11, 50]), max_seq_len=512,
        activation=rng.choice(["relu", "gelu", "swiglu", "geglu"]),
        norm=rng.choice(["layernorm", "rmsnorm"]), norm_position=rng.choice(["pre", "post"]),
        bias=rng.random() < 0.5, tie_embeddings=rng.random() < 0.5,
        final_norm=rng.random() < 0.7, embed_norm=rng.random() < 0.2,
        position=rng.choice(["sinusoidal", "learned", "rotary", "relative", "none"]),
    )  # fmt: skip
    if arch != "decoder":
        f["n_encoder_layers"] = rng.choice([1, 2, 3, 5])
    if arch != "encoder":
        f["n_decoder_layers"] = rng.choice([1, 2, 3, 5])
    if arch == "encoder" and rng.random() < 0.4:
        f.update(pooler=True, lm_head=False, n_labels=rng.choice([0, 3]))
    if arch == "decoder" and rng.random() < 0.2:
        f["sliding_window"] = rng.choice([4, 16])
    return ModelSpec(**f)


def _specs(rng: random.Random) -> list[ModelSpec]:
    specs = [_random_spec(rng, i) for i in range(30)]
    specs += [ModelSpec.from_hf_config(cfg) for cfg in CONFIGS.values()]
    specs += [hf_twin_spec(n) for n in ("gpt2-small", "bert-base", "t5-small")]
    specs += [PRESETS[n] for n in ("gpt2-small", "llama-3-8b", "mistral-7b", "t5-small")]
    return specs


def _structure(rng: random.Random, spec: ModelSpec) -> dict[str, Any]:
    """Every workload field but the sizes."""
    mode = rng.choice(["train", "train", "prefill", "decode"])
    if spec.arch == "encoder" and mode == "decode":
        mode = "prefill"
    f: dict[str, Any] = {"mode": mode, "attention_impl": rng.choice(["eager", "fused"])}
    if mode == "train":
        f["dtype"] = rng.choice(["fp32", "fp32", "bf16", "fp16"])
        if f["dtype"] != "fp32" and rng.random() < 0.5:
            f["master_weights"] = True
        if f["dtype"] == "fp32" and rng.random() < 0.25 and spec.arch == "decoder":
            f["autocast"] = rng.choice(["bf16", "fp16"])
        f["optimizer"] = rng.choice(["adamw", "sgd-momentum", "adafactor", "adamw-8bit", "none"])
        if not f.get("autocast"):
            f["checkpointing"] = rng.choice(["none", "full"])
            f["dropout"] = rng.choice([0.0, 0.1])
        if rng.random() < 0.3:
            f["use_cache"] = rng.choice([True, False])
    else:
        f["dtype"] = rng.choice(["fp32", "bf16", "int8", "int4"])
        if rng.random() < 0.3:
            f["kv_cache_dtype"] = rng.choice(["fp8", "int4"])
        if rng.random() < 0.2:
            f["kv_cache"] = False
    if rng.random() < 0.25 and not f.get("autocast"):
        f["attention_pattern"] = rng.choice(["full", "causal", "sliding_window", "chunked"])
        if f["attention_pattern"] in ("sliding_window", "chunked"):
            f["window"] = rng.choice([2, 4, 7, 16])
    f["device"] = rng.choice(["cuda", "cpu"])
    if rng.random() < 0.15:
        f["causal_flops"] = "triangle"
    if mode == "decode" and rng.random() < 0.5:
        f["prompt_len"] = 1  # given: a variable of the structure (its value drawn per point)
    if spec.arch == "encoder-decoder" and rng.random() < 0.5:
        f["target_len"] = 1
    return f


def _sizes(rng: random.Random, spec: ModelSpec, f: dict[str, Any]) -> dict[str, Any]:
    """Sizes of one point, in the regimes that decide answers: b = 1 and large, s = 1, long."""
    limit = 200 if spec.max_seq_len < 1024 else 2048
    s = spec.n_positions if spec.is_patch_input else rng.choice([1, 2, 3, 8, 33, 100, limit])
    out = {"batch_size": rng.choice([1, 1, 2, 3, 16, 64]), "seq_len": s}
    if f["mode"] == "decode":
        out["new_tokens"] = rng.choice([1, 2, 5, 40, 300])
    if "prompt_len" in f:
        out["prompt_len"] = rng.choice([1, 3, 20, 64])
    if "target_len" in f:
        out["target_len"] = rng.choice([1, 4, 17, 60])
    return out


def _grid() -> list[tuple[ModelSpec, list[Workload]]]:
    rng = random.Random(SEED)
    specs = _specs(rng)
    out = []
    while len(out) < N_STRUCTURES:
        spec = rng.choice(specs)
        f = _structure(rng, spec)
        points = []
        for _ in range(POINTS_EACH):
            try:
                points.append(Workload(**(f | _sizes(rng, spec, f))))
            except ValueError:  # a field combination the Workload refuses
                break
        if len(points) == POINTS_EACH:
            out.append((spec, points))
    return out


GRID = _grid()


@pytest.mark.parametrize(("spec", "points"), GRID, ids=[f"{i}" for i in range(len(GRID))])
def test_compiled_program_matches_direct_terms_at_every_point(spec, points) -> None:
    traced = 0
    for w in points:
        try:
            direct = estimate(spec, w, direct=True)
        except SpecError as exc:  # refused points are refused the same way
            with pytest.raises(type(exc), match=None):
                estimate(spec, w)
            continue
        prog = program(raw_estimate, spec, direct.workload)
        raw = prog.evaluate(direct.workload, eager=True)
        assert raw is not None or not prog.traceable, "a traceable structure gave no program"
        if raw is None:
            continue
        traced += 1
        compiled = assemble(spec, direct.workload, resolve(spec, direct.workload), raw)
        assert compiled.model_dump_json() == direct.model_dump_json()
        assert estimate(spec, w).model_dump_json() == direct.model_dump_json()
    # each structure is traced once and reused (a structure may need a few traces)
    assert traced == 0 or len(program(raw_estimate, spec, direct.workload).traces) <= traced
