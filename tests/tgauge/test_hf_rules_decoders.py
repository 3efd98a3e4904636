"""The HF rules of the decoder-only families (estimator/rules/hf/decoders.py,
estimator/rules/hf/decoders_pass.py) against the real transformers classes: GPT-2, Llama, Mistral
(window 8 < s), CPU fp32, eager and sdpa, train / prefill / decode, at two (b, s) points.

Oracle: tgauge.validate.validate_point on the real model (profiler: saved tensors by unique
storage, the live tracker's peak and phase, the cache's storages after every step).
Done criteria of issue 9: parameters exact, eager FLOPs exact, KV cache exact after the
prefill and every step, saved activations per term exact, peaks within 2% with the phase right.
"""

import pytest

from estimator.spec import ModelSpec, Workload

pytest.importorskip("transformers")
from hf_checks import assert_point  # noqa: E402
from hf_tiny import CONFIGS  # noqa: E402

from tgauge.validate import validate_point  # noqa: E402

FAMILIES = ("gpt2", "llama", "mistral")
ATTENTION = ("eager", "fused")
SMALL = (2, 32)
#: activations dominate the training peak (tiny widths); s + new tokens within GPT-2's 64
#: learned positions
LARGE = {"train": (4, 64), "prefill": (4, 64), "decode": (4, 48)}


def point(family: str, attention: str, mode: str, b: int, s: int, **workload):
    if mode == "decode":
        workload.setdefault("new_tokens", 3)
    w = Workload(batch_size=b, seq_len=s, attention_impl=attention, mode=mode, **workload)
    config = CONFIGS[family]
    return validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)


def check(family: str, attention: str, mode: str, b: int, s: int, **workload) -> None:
    p = point(family, attention, mode, b, s, **workload)
    assert_point(p, mode, attention, workload.get("new_tokens", 3))


SLOW = pytest.mark.slow
SMALL_CASES = [("train", "eager"), ("train", "fused"),
               pytest.param("decode", "fused", marks=SLOW),
               pytest.param("decode", "eager", marks=SLOW),
               pytest.param("prefill", "eager", marks=SLOW),
               pytest.param("prefill", "fused", marks=SLOW)]  # fmt: skip


@pytest.mark.parametrize(("mode", "attention"), SMALL_CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_decoder_matches_real_model_small(family, mode, attention):
    check(family, attention, mode, *SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["train", "prefill", "decode"])
def test_hf_decoder_matches_real_model_large(family, attention, mode):
    check(family, attention, mode, *LARGE[mode])


@pytest.mark.parametrize("attention", ["fused", pytest.param("eager", marks=SLOW)])
def test_mistral_window_cache_keeps_whole_prefill_then_the_window(attention):
    # prompt 12 > window 8: the prefill's cat stays whole (12 positions), steps keep 8
    check("mistral", attention, "decode", 2, 32, prompt_len=12, new_tokens=4)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_decoder_short_prompt_decode_steps_match_real_model(family):
    check(family, "eager", "decode", 2, 32, prompt_len=4, new_tokens=10)


@pytest.mark.parametrize("family", ["gpt2", pytest.param("mistral", marks=SLOW)])
def test_use_cache_false_training_matches_real_model(family):
    # GPT-2 sdpa saves the DynamicCache's k, v copies only when a cache is built
    check(family, "fused", "train", *SMALL, use_cache=False)
