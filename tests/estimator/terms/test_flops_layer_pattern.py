"""Decode FLOPs under a per-layer attention pattern (Gemma 2's sliding / full layers, issue
22g): a cached step's sliding layers attend to min(seen, w) positions (transformers 5.24
cache_utils.DynamicSlidingWindowLayer keeps w - 1 and the new one), its full layers to every
seen position (DynamicLayer); the closed-form sum over the steps equals the step-by-step one."""

import pytest

from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload
from estimator.terms.flops import decode_step, decode_steps
from tgauge.hf_tiny_families import CONFIGS

SPEC = ModelSpec.from_hf_config(CONFIGS["gemma2"])


def test_cached_step_attends_per_layer_kind():
    b, prompt, t = 2, 10, 2
    sh = resolve(SPEC, Workload(batch_size=b, seq_len=prompt, attention_impl="eager",
                                mode="decode", new_tokens=3))  # fmt: skip
    seen, w = prompt + t, SPEC.sliding_window
    per_key = 2 * b * SPEC.n_heads * SPEC.head_dim  # one query . one key, per head
    n_sliding = SPEC.layer_pattern.count("sliding")
    n_full = len(SPEC.layer_pattern) - n_sliding
    want = per_key * (n_sliding * min(seen, w) + n_full * seen)
    terms = decode_step(SPEC, sh, t, True)
    assert terms["forward.decoder.layers.self_attn.scores"] == want
    assert terms["forward.decoder.layers.self_attn.mix"] == want


@pytest.mark.parametrize("new_tokens", [3, 40, 300])
@pytest.mark.parametrize("cache", [True, False])
def test_closed_form_equals_step_by_step(new_tokens, cache):
    sh = resolve(SPEC, Workload(batch_size=2, seq_len=10, attention_impl="eager",
                                mode="decode", new_tokens=new_tokens))  # fmt: skip
    terms, per_step = decode_steps(SPEC, sh, cache)
    want_terms, want_steps = decode_steps(SPEC, sh, cache, stepwise=True)
    assert terms == want_terms
    assert list(per_step) == want_steps
