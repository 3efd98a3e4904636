"""Latent attention's reference rules (estimator/rules/reference/mla.py, issue 22l): a
compiled program (sizes as symbols: the rules' choices on b, s, h become guards) gives the
direct run's Estimate byte for byte, and the rules are walked for the reference model only
(a Hugging Face class's latent attention has its own: estimator/rules/hf/deepseek_v3.py)."""

from __future__ import annotations

import random

import pytest

from estimator.compiled import program
from estimator.estimate import assemble, estimate, raw_estimate
from estimator.rules.registry import rule
from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload

MLA = dict(arch="decoder", n_decoder_layers=3, d_model=32, n_heads=4, head_dim=12, d_ff=48,
           vocab_size=61, max_seq_len=512, position="rotary", activation="swiglu",
           norm="rmsnorm", bias=False, tie_embeddings=False, kv_lora_rank=16, q_lora_rank=24,
           qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6)  # fmt: skip


@pytest.mark.parametrize(
    "extra", [{}, {"q_lora_rank": None, "v_head_dim": 12}, {"n_heads": 1}], ids=str
)
@pytest.mark.parametrize("mode", ["train", "prefill", "decode"])
def test_compiled_program_matches_direct_terms(extra, mode) -> None:
    rng = random.Random(f"{extra}{mode}")
    spec = ModelSpec(**{**MLA, **extra})
    for impl in ("eager", "fused"):
        for _ in range(4):
            kw = {"mode": mode, "attention_impl": impl, "batch_size": rng.choice([1, 2, 3, 16]),
                  "seq_len": rng.choice([1, 2, 8, 33, 100])}  # fmt: skip
            if mode == "decode":
                kw["new_tokens"] = rng.choice([1, 2, 5, 40])
            if mode == "train":
                kw["checkpointing"] = rng.choice(["none", "full"])
            direct = estimate(spec, Workload(**kw), direct=True)
            raw = program(raw_estimate, spec, direct.workload).evaluate(direct.workload, eager=True)
            assert raw is not None
            compiled = assemble(spec, direct.workload, resolve(spec, direct.workload), raw)
            assert compiled.model_dump_json() == direct.model_dump_json()


def test_latent_rules_walk_the_reference_model_only() -> None:
    ours = ModelSpec(**MLA)
    theirs = ours.model_copy(
        update={"implementation": "hf", "hf_architecture": "DeepseekV3ForCausalLM"}
    )
    assert rule("attention.latent", ours)(ours) is True
    assert rule("attention.latent", theirs)(theirs) is False
    plain = ModelSpec(**{k: v for k, v in MLA.items() if "rank" not in k and "_dim" not in k})
    assert rule("attention.latent", plain)(plain) is False
