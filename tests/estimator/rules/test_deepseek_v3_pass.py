"""Issue 22s: DeepSeek-V3's no-grad replay (estimator/rules/hf/deepseek_v3_pass.py) without
torch: a traced program gives the direct run's integers, and the cache a decode step starts
from is the latent cache of the KV-cache terms (measured against the real class in
tests/estimator/terms/test_kv_latent.py and tests/tgauge/test_hf_rules_families.py)."""

import random

import pytest

from estimator.estimate import estimate
from estimator.replay.inference import _cache_bytes
from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload
from estimator.terms.kv_cache import kv_cache_at
from tgauge.hf_tiny_families import CONFIGS

SPEC = ModelSpec.from_hf_config(CONFIGS["deepseek_v3"])


@pytest.mark.parametrize("engine", ["forward", "hf-generate"])
@pytest.mark.parametrize("attention", ["eager", "fused"])
@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_deepseek_v3_pass_compiled_matches_direct(mode, attention, engine):
    rng = random.Random(f"{mode}-{attention}-{engine}")  # seeded: the same points every run
    for _ in range(12):  # enough points for estimate() to trace the structure and reuse it
        b, s = rng.randint(1, 5), rng.randint(1, 48)
        extra = {"new_tokens": rng.randint(1, 9)} if mode == "decode" else {}
        w = Workload(batch_size=b, seq_len=s, attention_impl=attention, mode=mode,
                     engine=engine, **extra)  # fmt: skip
        compiled, direct = estimate(SPEC, w), estimate(SPEC, w, direct=True)
        assert compiled.model_dump_json() == direct.model_dump_json(), (b, s, extra)


@pytest.mark.parametrize(("b", "prompt", "step"), [(1, 5, 0), (3, 17, 2), (2, 30, 6)])
def test_decode_step_starts_from_the_latent_cache_terms(b, prompt, step):
    """replay/inference.py _cache_bytes for latent attention: L b T (kv_lora_rank + d_rope)
    values, the KV-cache terms' bytes after the step that left T positions."""
    w = Workload(batch_size=b, seq_len=prompt, mode="decode", new_tokens=step + 1)
    sh = resolve(SPEC, w)
    held = prompt + step
    assert _cache_bytes(SPEC, sh, held, 0) == sum(kv_cache_at(SPEC, sh, step).values())
