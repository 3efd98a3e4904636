"""Serving engines (issue 19, estimator/replay/engines.py): what each keeps live around the
model's forward, against hand-worked bytes. generate()'s own figures are measured in
tests/profiler/test_prof_generate.py."""

from __future__ import annotations

import pytest

from estimator.estimate import estimate
from estimator.spec import UnsupportedError, Workload
from estimator.spec.presets import get_preset

LLAMA = get_preset("llama-3-8b")
BASE = Workload(
    mode="decode", dtype="bf16", attention_impl="fused", batch_size=4, prompt_len=1024,
    new_tokens=16,
)  # fmt: skip


def test_generate_prefill_drops_the_prompt_logits_of_the_plain_forward() -> None:
    # forward: logits [b, P, V] bf16 at the prefill's end; generate(): logits_to_keep=1
    plain = estimate(LLAMA, BASE)
    gen = estimate(LLAMA, BASE.replace(engine="hf-generate"))
    assert plain.peak_phase == gen.peak_phase == "prefill"
    # the plain forward's peak is at its logits: the weights, the prompt's cache and the
    # [b, P, V] logits are live at once; generate() stays below that moment without them
    logits = 4 * 1024 * LLAMA.vocab_size * 2
    cache = 4 * 1024 * (2 * 8 * 128 * 2) * 32
    held = plain.memory.terms["weights"] + cache
    assert plain.peak_memory_bytes >= held + logits
    assert gen.peak_memory_bytes < held + logits
    assert gen.memory.terms == plain.memory.terms  # the engine changes no held term


def test_vllm_holds_the_blocks_of_the_batch_at_full_length() -> None:
    # 1024 + 16 tokens = 65 blocks of 16; per block: 2 (K, V) x 8 heads x 128 x 16 x 2 bytes x 32
    w = BASE.replace(engine="vllm", prompt_len=1030)  # 1046 tokens -> 66 blocks
    est = estimate(LLAMA, w)
    pool = 4 * 66 * 16 * (2 * 8 * 128 * 2) * 32
    assert est.kv_cache.total == 4 * 1046 * (2 * 8 * 128 * 2) * 32  # positions, not blocks
    assert est.peak_phase == "prefill"  # a 512-token chunk per sequence (2048 // 4)
    # 512 more new tokens: 32 more blocks per sequence, held from the first step on
    longer = estimate(LLAMA, w.replace(new_tokens=16 + 512))
    pool_longer = 4 * 98 * 16 * (2 * 8 * 128 * 2) * 32  # 1558 tokens -> 98 blocks
    assert longer.peak_memory_bytes - est.peak_memory_bytes == pool_longer - pool
    bigger = estimate(LLAMA, w.replace(block_size=64))  # 1046 -> 17 blocks of 64 = 1088
    assert bigger.peak_memory_bytes - est.peak_memory_bytes == 4 * (1088 - 1056) * 4096 * 32


def test_vllm_chunked_prefill_bounds_the_prefill_activations() -> None:
    # the prefill's forward runs max_num_batched_tokens // b tokens per sequence
    w = BASE.replace(engine="vllm", prompt_len=8000, new_tokens=16)
    small = estimate(LLAMA, w.replace(max_num_batched_tokens=512))
    large = estimate(LLAMA, w.replace(max_num_batched_tokens=8192))
    assert small.peak_memory_bytes < large.peak_memory_bytes
    assert small.memory.terms == large.memory.terms


@pytest.mark.parametrize(
    ("update", "match"),
    [({"attention_impl": "eager"}, "fused"), ({"kv_cache": False}, "paged KV cache")],
)
def test_vllm_refuses_what_it_does_not_run(update: dict, match: str) -> None:
    with pytest.raises(UnsupportedError, match=match):
        estimate(LLAMA, BASE.replace(engine="vllm", **update))


def test_vllm_fields_need_the_vllm_engine() -> None:
    with pytest.raises(ValueError, match="block_size"):
        BASE.replace(block_size=32)


@pytest.mark.parametrize("engine", ["hf-generate", "vllm"])
@pytest.mark.parametrize("kv_dtype", [None, "fp8"])
def test_compiled_engine_estimates_equal_the_direct_run(engine: str, kv_dtype) -> None:
    # estimator/compiled traces a structure after its first direct points: same integers
    import random

    rng = random.Random(19)
    for spec in (LLAMA, get_preset("mistral-7b"), get_preset("gpt2-small")):
        for _ in range(8):
            w = Workload(
                mode="decode", dtype="bf16", attention_impl="fused", engine=engine,
                kv_cache_dtype=kv_dtype, batch_size=rng.randint(1, 64),
                prompt_len=rng.randint(1, 900), new_tokens=rng.randint(1, 100),
            )  # fmt: skip
            assert estimate(spec, w).model_dump() == estimate(spec, w, direct=True).model_dump()
