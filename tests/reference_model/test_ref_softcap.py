"""Soft-capping (Gemma 2: spec.attn_softcap, scores -> c tanh(scores / c) before the softmax,
eager attention only; spec.final_softcap, logits -> c tanh(logits / c), vocabulary-sized
tensors) in the reference model: parameters, FLOPs, every saved term (the scores' tanh in
``self_attn.scores``, the logits' in ``final_softcap``), the KV cache and the peaks against
the measurement (tgauge.validate.validate_point), as tests/reference_model/
test_ref_layer_pattern.py does; seeded random points combine them with Gemma 2's other
features (per-layer patterns, sandwich norms, embedding scale) and QK-norm."""

from __future__ import annotations

import random

import pytest
import torch
from ref_specs import GPT, LLAMA, fixed_params, spec, workload
from test_ref_layer_pattern import PATTERNS, _check

from estimator import estimate
from estimator.spec import UnsupportedError, Workload
from reference_model import build_model

CAPS = {"attn_softcap": 5.0, "final_softcap": 3.0}
FINAL = {"final_softcap": 3.0}
GEMMA2 = {**CAPS, **PATTERNS["alternate"], "sublayer_norm": "sandwich", "embed_scale": True}

FIXED = [  # (base, fields, workload, slow)
    ("llama", CAPS, workload("train", 2, 12, "eager"), False),
    ("gpt", CAPS, workload("train", 1, 16, "eager"), False),
    ("llama", FINAL, workload("train", 2, 12, "fused"), False),
    ("gpt", CAPS, workload("prefill", 1, 12, "eager"), False),
    ("llama", CAPS, workload("decode", 2, 12, "eager"), False),
    ("llama", GEMMA2, workload("train", 2, 12, "eager"), False),
    ("llama", CAPS, workload("train", 1, 48, "eager"), True),
    ("gpt", FINAL, workload("decode", 1, 40, "fused"), True),
    ("llama", CAPS, workload("train", 2, 12, "eager", checkpointing="full"), True),
    ("gpt", CAPS, workload("train", 2, 12, "eager", checkpointing="selective"), True),
    ("gpt", CAPS, workload("train", 2, 12, "eager", dropout=0.1), True),
    ("llama", GEMMA2, workload("decode", 1, 16, "eager"), True),
    ("llama", GEMMA2, workload("decode", 2, 12, "eager", engine="hf-generate"), True),
]


@pytest.mark.parametrize(
    "base,fields,wl",
    fixed_params(FIXED),
)
def test_softcaps_match_measurement(base, fields, wl) -> None:
    _check(base, fields, wl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_softcap_random_points(seed) -> None:
    rng = random.Random(2260 + seed)
    fields = {
        **rng.choice([CAPS, FINAL, {"attn_softcap": 2.0}]),
        "n_kv_heads": rng.choice([1, 2, 4]),
    }
    others = [PATTERNS["alternate"], PATTERNS["global-first"], {"qk_norm": "head"},
              {"sublayer_norm": "sandwich"}, {"embed_scale": True}]  # fmt: skip
    fields.update(rng.choice([{}, *others]))
    mode = rng.choice(["train", "train", "prefill", "decode"])
    kw = rng.choice([{}, {"checkpointing": "full"}]) if mode == "train" else {}
    b, s = rng.choice([1, 2, 3]), rng.choice([8, 12, 16])
    impl = "eager" if "attn_softcap" in fields else rng.choice(["eager", "fused"])
    _check(rng.choice(["gpt", "llama"]), fields, workload(mode, b, s, impl, **kw))


def test_softcaps_bound_scores_and_logits() -> None:
    """Logits lie in (-c, c) and are c tanh of the uncapped head's; decoding with the cache
    gives the tokens of the full forward."""
    torch.manual_seed(0)
    model = build_model(spec(**{**GPT, **CAPS})).eval()
    ids = torch.randint(0, 61, (2, 7))
    logits = model(ids).logits
    assert logits.abs().max() < 3.0
    h = model(ids).hidden_states
    torch.testing.assert_close(logits, 3.0 * torch.tanh(model.lm_head(h) / 3.0))
    assert torch.equal(model.generate(ids, 4), model.generate(ids, 4, use_cache=False))


def test_params_order_matches_the_model() -> None:
    """param_tensor_shapes (the optimizer step's order) is model.parameters()' for Gemma 2's
    features together (sandwich norms, QK-norm, soft-caps, per-layer pattern)."""
    from estimator.terms.params import param_tensor_shapes

    for base in (GPT, LLAMA):
        s = spec(**{**base, **GEMMA2, "qk_norm": "head"})
        model = build_model(s, device="meta")
        assert param_tensor_shapes(s) == tuple(tuple(p.shape) for p in model.parameters())


def test_fused_attention_softcap_is_refused_by_name() -> None:
    """sdpa has no soft-capping (transformers runs Gemma 2 eager): refused, not guessed."""
    s = spec(**{**LLAMA, **CAPS})
    wl = Workload(mode="train", batch_size=1, seq_len=8, attention_impl="fused")
    with pytest.raises(UnsupportedError, match="attn_softcap"):
        estimate(s, wl)
    with pytest.raises(UnsupportedError, match="attn_softcap"):
        build_model(s, wl)
