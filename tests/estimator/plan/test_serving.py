"""Serving numbers: paged-KV capacity against hand-computed blocks, labelled throughput."""

from __future__ import annotations

import pytest

from estimator.estimate import estimate
from estimator.plan.hardware import Overheads, custom_gpu, get_gpu, step_times
from estimator.plan.serving import block_bytes, blocks_per_sequence, serving_capacity, throughput
from estimator.spec import ModelSpec, SpecError, UnsupportedError, Workload
from estimator.spec.presets import get_preset

# L = 2 decoder layers, h = 4, h_kv = 2, d_h = 64 / 4 = 16
TINY = ModelSpec(
    name="tiny", arch="decoder", n_decoder_layers=2, d_model=64, n_heads=4, n_kv_heads=2,
    d_ff=128, vocab_size=100, max_seq_len=512, activation="swiglu", norm="rmsnorm",
    bias=False, tie_embeddings=False, position="rotary",
)  # fmt: skip
TINY_GPU = custom_gpu(
    name="tiny-gpu", total_bytes=10 * 2**20, peak_tflops={"fp16": 100.0}, bandwidth_tb_s=1.0
)
NO_OVERHEADS = Overheads(cuda_context_bytes=0, workspace_bytes=0)
DECODE = Workload(
    mode="decode", dtype="fp16", attention_impl="fused", prompt_len=100, new_tokens=28
)


def test_block_bytes_match_vllm_cache_block_by_hand() -> None:
    # vLLM CacheEngine.get_cache_block_size: block_size * num_kv_heads * head_size per K and V,
    # times num_layers, times dtype size: 16 * 2 * 16 * 2 (K, V) * 2 layers * 2 bytes = 4096
    assert block_bytes(TINY, DECODE, 16) == 4096
    # tp = 2: each GPU caches h_kv // tp = 1 head
    assert block_bytes(TINY, DECODE, 16, tp=2) == 2048
    # fp8 KV cache: one byte per element
    fp8 = DECODE.model_copy(update={"kv_cache_dtype": "fp8_e4m3"})
    assert block_bytes(TINY, fp8, 16) == 2048
    # Llama-2-7B fp16: 16 * 32 heads * 128 * 2 * 32 layers * 2 bytes = 8 MiB per block
    llama = Workload(mode="decode", dtype="fp16", prompt_len=16)
    assert block_bytes(get_preset("llama-2-7b"), llama, 16) == 8 * 2**20


def test_blocks_per_sequence_round_up_and_cap_at_the_window() -> None:
    assert blocks_per_sequence(TINY, DECODE, 16) == 8  # 100 + 28 = 128 tokens
    assert blocks_per_sequence(TINY, DECODE.model_copy(update={"new_tokens": 29}), 16) == 9
    # Mistral, window 4096: 8192 tokens would take 512 blocks, the window 4096 / 16 + 1 = 257
    wl = Workload(mode="decode", dtype="bf16", prompt_len=8000, new_tokens=192)
    assert blocks_per_sequence(get_preset("mistral-7b"), wl, 16) == 257


def test_tiny_capacity_matches_hand_computed_blocks() -> None:
    cap = serving_capacity(TINY, DECODE, TINY_GPU, overheads=NO_OVERHEADS)
    # the reserved memory is the profiling prefill (b = 1, s = 100) without its KV cache
    profile = estimate(TINY, Workload(mode="prefill", dtype="fp16", attention_impl="fused",
                                      seq_len=100))  # fmt: skip
    reserved = profile.peak_memory_bytes - profile.kv_cache.total
    budget = int(10 * 2**20 * 0.9)  # 9,437,184
    assert cap.reserved_bytes == reserved
    assert cap.budget_bytes == budget
    assert cap.kv_cache_bytes == budget - reserved
    assert cap.n_blocks == (budget - reserved) // 4096
    assert cap.max_concurrent_sequences == cap.n_blocks // 8
    assert cap.max_concurrent_sequences > 0


def test_throughput_at_max_concurrency_is_the_batched_decode() -> None:
    cap = serving_capacity(TINY, DECODE, TINY_GPU, overheads=NO_OVERHEADS)
    c = cap.max_concurrent_sequences
    times = step_times(estimate(TINY, DECODE.model_copy(update={"batch_size": c})), TINY_GPU)
    gen_s = sum(s.time_s for s in times.decode_steps)
    at = cap.at_max_concurrency
    assert at.tokens_per_s_per_gpu == pytest.approx(c * 28 / gen_s)
    assert at.tpot_first_s == times.decode_steps[0].time_s
    assert at.tpot_last_s == times.decode_steps[-1].time_s


def test_throughput_labels_per_gpu_and_all_gpus() -> None:
    wl = Workload(mode="train", dtype="bf16", seq_len=512)
    times = step_times(estimate(get_preset("gpt2-small"), wl), get_gpu("h100-sxm"))
    one = throughput(times)
    eight = throughput(times, n_gpus=8, tp=2)
    assert one.tokens_per_s_per_gpu == pytest.approx(512 / times.step.time_s)
    assert eight.tokens_per_s_per_gpu == pytest.approx(one.tokens_per_s_per_gpu)
    assert eight.tokens_per_s_all_gpus == pytest.approx(8 * one.tokens_per_s_per_gpu)
    assert eight.step_s == pytest.approx(times.step.time_s / 2)  # ideal tp split


def test_decode_throughput_separates_first_token_from_output_tokens() -> None:
    wl = Workload(mode="decode", dtype="fp16", attention_impl="fused", prompt_len=3840,
                  new_tokens=256)  # fmt: skip
    times = step_times(estimate(get_preset("llama-2-7b"), wl), get_gpu("a100-80gb"))
    t = throughput(times)
    assert t.ttft_s == times.step.time_s  # the prefill
    assert t.tpot_first_s < t.ttft_s and t.tpot_first_s <= t.tpot_last_s
    gen_s = sum(s.time_s for s in times.decode_steps)
    assert t.tokens_per_s_per_gpu == pytest.approx(256 / gen_s)
    assert t.end_to_end_tokens_per_s_per_gpu == pytest.approx(256 / times.total_s)


def test_capacity_refuses_training_and_sequences_past_the_context() -> None:
    with pytest.raises(UnsupportedError):
        serving_capacity(TINY, Workload(mode="train"), TINY_GPU)
    with pytest.raises(SpecError, match="rope"):
        serving_capacity(TINY, DECODE.model_copy(update={"prompt_len": 500}), TINY_GPU)
