"""The KV cache's dtype in every peak: the inference replays (estimator/replay/inference.py,
the passes of estimator/rules/) hold the cache in ``kv_cache_dtype``, so a smaller cache lowers
the peak by exactly the cache's difference at the peak's moment."""

from __future__ import annotations

import pytest

from estimator.estimate import estimate
from estimator.plan.capacity import max_batch
from estimator.plan.hardware import get_gpu
from estimator.shapes import resolve
from estimator.spec import Workload
from estimator.spec.presets import get_preset
from estimator.terms.kv_cache import kv_cache_growth_bytes

LLAMA = get_preset("llama-3-8b")


@pytest.mark.parametrize("impl", ["reference", "hf"])
@pytest.mark.parametrize(
    ("sizes", "phase"),
    [
        ({"batch_size": 4, "prompt_len": 1024, "new_tokens": 8}, "prefill"),
        ({"batch_size": 4, "prompt_len": 4, "new_tokens": 2048}, "decode"),
    ],
)
@pytest.mark.parametrize("small", ["fp8", "fp8_e4m3", "int4"])
def test_peak_with_smaller_cache_drops_by_the_cache_difference(
    sizes: dict, phase: str, small: str, impl: str
) -> None:
    spec = LLAMA.model_copy(update={"implementation": impl}) if impl == "hf" else LLAMA
    if impl == "hf":
        spec = spec.model_copy(update={"hf_architecture": "LlamaForCausalLM"})
    base = Workload(mode="decode", dtype="bf16", attention_impl="fused", **sizes)
    ests = {}
    for dtype in ("bf16", small):
        w = base.replace(kv_cache_dtype=dtype)
        est = estimate(spec, w, direct=True)
        ests[dtype] = est, kv_cache_growth_bytes(spec, resolve(spec, w))
    (e16, g16), (e8, g8) = ests["bf16"], ests[small]
    assert e16.peak_phase == e8.peak_phase == phase
    assert g8[-1] < g16[-1]
    drop = e16.peak_memory_bytes - e8.peak_memory_bytes
    if phase == "prefill":  # at the prompt's logits: the cache the prefill filled
        assert drop == g16[0] - g8[0]
    else:  # inside the last layer's torch.cat of the last step: the whole new cache, and that
        # layer's old cache (one L-th of the cache before the step) not yet freed; the small
        # cache also holds the cast of the new position's keys and values (one L-th of a step)
        n_layers = LLAMA.n_decoder_layers
        old_layer = (g16[-2] - g8[-2]) // n_layers
        cast = (g8[-1] - g8[-2]) // n_layers
        assert drop == g16[-1] - g8[-1] + old_layer - cast


def test_static_batch_grows_with_an_fp8_cache() -> None:
    # issue 19: the largest batch was the same for bf16 and fp8 caches (the replay sized the
    # cache with the compute dtype); a cache half the size now admits more sequences
    usable = get_gpu("a100-80gb").total_bytes
    w = Workload(mode="decode", dtype="bf16", prompt_len=128, new_tokens=4096)
    b16 = max_batch(LLAMA, w.replace(kv_cache_dtype="bf16"), usable).max_value
    b8 = max_batch(LLAMA, w.replace(kv_cache_dtype="fp8"), usable).max_value
    assert b16 is not None and b8 is not None and b8 > b16
