"""LoRA on the reference model (issue 20), measured on CPU against the estimate of the same
spec and workload (tgauge.validate.validate_point): every parameter (adapters included),
weight, gradient, optimizer, saved-activation (per term) and FLOP row exact; the training peak
within the reference model's bar (tgauge.comparison.TOLERANCES, 2%) and in the same phase.
fp32 and pure bf16 bases, several (b, s) with b = 1 and long s, target sets, lora_dropout,
full checkpointing, GPT-like (LayerNorm, learned positions) and Llama-like (RMSNorm, rotary,
GQA, SwiGLU) specs; a fixed set beside seeded random draws."""

from __future__ import annotations

import random

import pytest

from estimator.spec import ModelSpec, Workload
from tgauge.comparison import TOLERANCES
from tgauge.validate import validate_point

BASE = dict(arch="decoder", d_model=32, n_heads=4, d_ff=64, vocab_size=61, max_seq_len=512)
GPT = dict(BASE, name="tiny-gpt", position="learned")
LLAMA = dict(BASE, name="tiny-llama", norm="rmsnorm", activation="swiglu", position="rotary",
             bias=False, tie_embeddings=False, n_kv_heads=2)  # fmt: skip
ALL = ("q", "k", "v", "o", "gate", "up", "down")


def _point(arch: dict, layers: int, **fields):
    spec = ModelSpec(**arch, n_decoder_layers=layers)
    lora = {"lora_rank": 4, "lora_alpha": 8} | fields
    w = Workload(mode="train", device="cpu", attention_impl="eager", dropout=0.0,
                 finetune="lora", **lora)  # fmt: skip
    point = validate_point(spec, w)
    assert point.status == "ok", point.notes
    return point


def _check(point) -> None:
    rows = {r.term: r for r in point.rows}
    assert any(t.endswith(".lora_A") for t in rows if t.startswith("params."))
    if point.workload["checkpointing"] != "full":  # else the layers' inputs only
        assert any(t.startswith("memory.activations.") and ".lora_" in t for t in rows)
    for term, r in rows.items():
        if term == "peak_memory":
            assert r.measured and r.rel_error <= TOLERANCES["peak_memory"], r
        else:
            assert r.verdict == "exact", r
    assert point.peak_phase_predicted == point.peak_phase_measured


FIXED = [
    (GPT, 2, dict(batch_size=2, seq_len=16)),
    pytest.param(GPT, 2, dict(batch_size=1, seq_len=8, dtype="bf16"), marks=pytest.mark.slow),
    pytest.param(LLAMA, 2, dict(batch_size=2, seq_len=16), marks=pytest.mark.slow),
    (LLAMA, 2, dict(batch_size=2, seq_len=16, dtype="bf16", lora_targets=("k", "o"))),
    (GPT, 2, dict(batch_size=2, seq_len=16, lora_dropout=0.1)),
    (LLAMA, 2, dict(batch_size=2, seq_len=16, checkpointing="full")),
    pytest.param(GPT, 2, dict(batch_size=1, seq_len=256), marks=pytest.mark.slow),
    pytest.param(
        LLAMA, 4, dict(batch_size=3, seq_len=24, lora_targets=ALL), marks=pytest.mark.slow
    ),  # fmt: skip
    pytest.param(
        LLAMA,
        4,
        dict(batch_size=1, seq_len=200, checkpointing="full", lora_dropout=0.05),
        marks=pytest.mark.slow,
    ),  # fmt: skip
    pytest.param(
        GPT,
        3,
        dict(batch_size=1, seq_len=300, dtype="bf16", checkpointing="full"),
        marks=pytest.mark.slow,
    ),  # fmt: skip
    pytest.param(
        LLAMA, 2, dict(batch_size=1, seq_len=128, lora_targets=ALL), marks=pytest.mark.slow
    ),  # fmt: skip
]


@pytest.mark.parametrize(("arch", "layers", "fields"), FIXED)
def test_reference_lora_rows_match_measurement(arch, layers, fields) -> None:
    _check(_point(arch, layers, **fields))


def _draw(seed: int) -> tuple[dict, int, dict]:
    """One random point of the modelled space (seeded)."""
    rng = random.Random(seed)
    arch = rng.choice([GPT, LLAMA])
    targets = rng.choice([("q", "v"), ("q", "k"), ("k", "v", "o"), ("q", "up", "down"), ALL])
    if arch is GPT:
        targets = tuple(t for t in targets if t != "gate")
    fields = dict(
        batch_size=rng.randint(1, 3),
        seq_len=rng.choice([1, 5, 16, 37, 64]),
        dtype=rng.choice(["fp32", "bf16"]),
        lora_targets=targets,
        lora_rank=rng.choice([1, 4, 8]),
        lora_dropout=rng.choice([0.0, 0.1]),
        checkpointing=rng.choice(["none", "full"]),
    )
    return arch, rng.randint(2, 3), fields


@pytest.mark.parametrize(
    "seed", [0] + [pytest.param(s, marks=pytest.mark.slow) for s in range(1, 12)]
)
def test_random_reference_lora_points_match_measurement(seed) -> None:
    arch, layers, fields = _draw(seed)
    _check(_point(arch, layers, **fields))
