"""Capacity planning: hand-worked fits, and every reported maximum fits while max + 1 does not."""

from __future__ import annotations

import pytest

from estimator.estimate import estimate
from estimator.plan.capacity import (
    Sharding,
    fewest_gpus,
    fit,
    max_batch,
    max_context,
    peak_bytes,
    sharded_terms,
)
from estimator.spec import SpecError, Workload
from estimator.spec.presets import get_preset

GiB = 2**30
LLAMA2 = get_preset("llama-2-7b")
# Llama-2-7B: 6,738,415,616 parameters -> fp16 weights 13,476,831,232 bytes.
# KV cache per token: 2 (K, V) * 32 layers * 32 kv heads * 128 d_h * 2 bytes = 524,288 bytes.
# Fused-attention prefill peak (estimator/replay/inference.py), in the last layer's gated FFN at
# act(gate) * up: the gated FFN's 3 [n, d_ff] tensors, 3 * 11008 * 2 = 66,048 bytes per token,
# beside 4 [n, d] (the embeddings, the layer input, the attention sublayer's sum, the ffn_norm
# output), 4 * 4096 * 2 = 32,768, and the input id (int64), 8; the cache of all 32 layers is
# full by then. (The logits moment is lower: 32000 * 2 + 2 * 8192 per token.)
W = 13_476_831_232
PER_TOKEN = 524_288 + 66_048 + 32_768 + 8  # 623,112 bytes per prefilled token
PREFILL = Workload(mode="prefill", dtype="fp16", attention_impl="fused", seq_len=4096)


def test_llama2_prefill_peak_is_weights_plus_kv_plus_ffn_moment_by_hand() -> None:
    est = estimate(LLAMA2, PREFILL)
    assert est.memory.terms["weights"] == W
    assert est.peak_memory_bytes == W + 4096 * PER_TOKEN


def test_llama2_max_batch_at_4k_on_80_gib_by_hand() -> None:
    # (80 GiB - W) / (4096 * 623,112) = 72,422,514,688 / 2,552,266,752 = 28.38 -> 28
    limit = max_batch(LLAMA2, PREFILL, 80 * GiB)
    assert limit.max_value == 28 and limit.next_value == 29
    assert limit.max_fit.headroom_bytes == 80 * GiB - W - 28 * 4096 * PER_TOKEN
    assert limit.grew_most == "kv_cache.self"


def test_llama2_longest_prefill_on_80_gib_by_hand() -> None:
    # b = 1: the FFN moment bounds it, (80 GiB - W) // 623,112 = 116,227 tokens; fused causal
    # attention gets sdpa's is_causal, so no [s, s] mask is built. Past Llama-2's 4096
    # positions only with a rope scaling factor (32 x 4096 = 131,072 > 116,227).
    scaled = PREFILL.model_copy(update={"batch_size": 1, "rope_scaling": 32.0})
    limit = max_context(LLAMA2, scaled, 80 * GiB)
    assert limit.max_value == (80 * GiB - W) // PER_TOKEN == 116_227


def test_llama2_longest_context_stops_at_its_4096_positions_without_rope_scaling() -> None:
    limit = max_context(LLAMA2, PREFILL.model_copy(update={"batch_size": 1}), 80 * GiB)
    assert limit.max_value == 4096 and limit.next_fit is None
    assert "context limit, 4,096 tokens" in limit.capped_by
    # decode: the prompt leaves room for the new tokens (3840 + 256 = 4096)
    dec = Workload(mode="decode", dtype="fp16", attention_impl="fused", new_tokens=256)
    assert max_context(LLAMA2, dec, 80 * GiB).max_value == 3840


@pytest.mark.parametrize(
    "name,workload",
    [
        ("gpt2-small", Workload(mode="train", batch_size=1, seq_len=256)),
        ("llama-3-8b", Workload(mode="decode", dtype="bf16", prompt_len=1024, new_tokens=64)),
        ("t5-small", Workload(mode="train", seq_len=128)),
        ("mistral-7b", Workload(mode="prefill", dtype="bf16", seq_len=2048)),
    ],
)
def test_max_batch_and_context_fit_and_max_plus_one_does_not(name, workload) -> None:
    spec, usable = get_preset(name), 24 * GiB
    for limit in (max_batch(spec, workload, usable), max_context(spec, workload, usable)):
        if limit.max_value is None:
            continue
        assert limit.max_fit.fits and limit.max_fit.peak_bytes <= usable
        if limit.next_fit is not None:
            assert not limit.next_fit.fits and limit.next_fit.peak_bytes > usable
            assert limit.next_value == limit.max_value + 1
        else:
            assert limit.capped_by  # the model's own limit (learned positions)


def test_learned_positions_cap_the_context_of_gpt2() -> None:
    limit = max_context(get_preset("gpt2-small"), Workload(mode="prefill"), 80 * GiB)
    assert limit.max_value == 1024 and "context limit, 1,024 tokens" in limit.capped_by


def test_zero3_terms_are_the_rank_estimate_of_fsdp2_shards() -> None:
    est = estimate(LLAMA2, Workload(mode="train", dtype="bf16", seq_len=1024))
    mem = est.memory.terms
    t = sharded_terms(est, Sharding(n_gpus=8, zero=3))
    # every dim 0 of Llama-2-7B (4096, 11008, 32000) is a multiple of 8: no FSDP2 padding
    assert t["weights"] == mem["weights"] // 8
    assert t["gradients"] == mem["gradients"] // 8
    assert t["optimizer.exp_avg"] == mem["optimizer.exp_avg"] // 8
    assert t["activations.decoder.layers.ffn.gate"] == mem["activations.decoder.layers.ffn.gate"]
    rank = estimate(est.spec, est.workload, parallel=Sharding(n_gpus=8, zero=3).parallel())
    assert peak_bytes(est, Sharding(n_gpus=8, zero=3)) == (rank.peak_memory_bytes, rank.peak_phase)


def test_zero1_on_one_gpu_is_the_estimate_peak() -> None:
    est = estimate(LLAMA2, Workload(mode="train", dtype="bf16", seq_len=512))
    assert peak_bytes(est, Sharding(n_gpus=1, zero=1)) == (est.peak_memory_bytes, est.peak_phase)


def test_tensor_parallel_splits_layers_but_keeps_embeddings_replicated() -> None:
    est = estimate(LLAMA2, Workload(mode="prefill", dtype="fp16", seq_len=1024))
    t = sharded_terms(est, Sharding(n_gpus=2, tp=2))
    # embed and lm_head: 2 * 32000 * 4096 params, fp16; final norm 4096
    replicated = (2 * 32000 * 4096 + 4096) * 2
    assert t["weights"] == replicated + (W - replicated) // 2
    assert t["kv_cache.self"] == est.memory.terms["kv_cache.self"] // 2


def test_fewest_gpus_fits_and_one_replica_fewer_does_not() -> None:
    wl = Workload(mode="train", dtype="bf16", master_weights=True, seq_len=2048)
    limit = fewest_gpus(LLAMA2, wl, 80 * GiB, zero=3)
    assert limit.max_value is not None and limit.max_value > 1
    assert limit.max_fit.fits and not limit.next_fit.fits
    assert limit.next_value == limit.max_value - 1
    zero = int(limit.strategy.split(",")[0].removeprefix("zero="))  # "zero=Z, tp=T"
    f = fit(estimate(LLAMA2, wl), 80 * GiB, Sharding(n_gpus=limit.max_value, zero=zero))
    assert f == limit.max_fit


def test_fewest_gpus_tries_every_zero_and_takes_the_fewest() -> None:
    wl = Workload(mode="train", dtype="bf16", master_weights=True, seq_len=2048)
    best = fewest_gpus(LLAMA2, wl, 80 * GiB, zero=0)
    for zero in (1, 2, 3):
        f = fit(estimate(LLAMA2, wl), 80 * GiB, Sharding(n_gpus=best.max_value - 1, zero=zero))
        assert not f.fits  # no strategy fits on one GPU fewer


def test_fewest_gpus_never_suggests_zero_for_inference() -> None:
    limit = fewest_gpus(LLAMA2, Workload(mode="prefill", seq_len=1024), 80 * GiB, zero=3)
    assert limit.max_value == 1 and limit.strategy == "zero=0, tp=1"


def test_zero0_never_fits_when_one_replica_does_not() -> None:
    wl = Workload(mode="train", dtype="bf16", seq_len=2048)
    limit = fewest_gpus(LLAMA2, wl, 24 * GiB, zero=0)
    # zero 0 never fits: the answer comes from a sharding strategy tried in its place
    assert limit.max_value and limit.strategy != "zero=0, tp=1"
    nothing = fewest_gpus(LLAMA2, wl, GiB // 4, zero=0)  # the activations alone exceed it
    assert nothing.max_value is None and "never fits" in nothing.capped_by


def test_tp_must_divide_kv_heads() -> None:
    with pytest.raises(SpecError, match="tp=3"):
        fewest_gpus(LLAMA2, Workload(mode="prefill"), 80 * GiB, tp=3)


# issue 11: with chunked attention the peak falls at every chunk boundary (a new, mostly
# padded chunk replaces the copies of a full one), so "longest context" is searched segment by
# segment: max_value is the largest n such that every n' <= n fits, longest_fitting the
# largest n that fits at all.
CHUNKED_PREFILL = Workload(
    mode="prefill",
    batch_size=1,
    seq_len=512,
    dtype="bf16",
    attention_pattern="chunked",
    window=256,
    attention_impl="eager",  # the issue's run; llama-2-7b's usual attention would be fused
)
ISSUE_USABLE = 13_847_031_807  # the issue's custom GPU, --reserve 0


def test_chunked_prefill_longest_context_of_the_issue_is_the_first_misfit_minus_one() -> None:
    limit = max_context(LLAMA2, CHUNKED_PREFILL, ISSUE_USABLE)
    assert (limit.max_value, limit.next_value) == (2047, 2048)
    assert limit.max_fit.fits and not limit.next_fit.fits
    assert limit.longest_fitting == 3074

    def fits(s: int) -> bool:
        est = estimate(LLAMA2, CHUNKED_PREFILL.model_copy(update={"seq_len": s}))
        return fit(est, ISSUE_USABLE).fits

    # the issue's observations: 2048 does not fit, 2049 and 2600 do; the answer above them
    assert not fits(2048) and fits(2049) and fits(2600)
    assert fits(3074) and not any(fits(s) for s in (3075, 3076, 3328, 3329, 3584, 4096))


def _brute(spec, workload, usable: int, field: str, top: int) -> tuple[int, int]:
    """(largest n with every n' <= n fitting, largest n fitting), n in 1..top, by trying all."""
    ok = []
    for n in range(1, top + 1):
        update = {field: n} | ({"target_len": n} if spec.arch == "encoder-decoder" else {})
        ok.append(fit(estimate(spec, workload.model_copy(update=update)), usable).fits)
    prefix = ok.index(False) if False in ok else top
    return prefix, max((i + 1 for i, v in enumerate(ok) if v), default=0)


@pytest.mark.parametrize("name", ["gpt2-small", "llama-3-8b", "t5-small"])
@pytest.mark.parametrize("mode", ["train", "prefill", "decode"])
@pytest.mark.parametrize("window", [5, 16])
def test_chunked_longest_context_matches_trying_every_length(name, mode, window) -> None:
    spec = get_preset(name)
    if mode == "decode":
        base = Workload(mode=mode, batch_size=2, prompt_len=8, new_tokens=3, seq_len=8)
        field = "prompt_len"
    else:
        base, field = Workload(mode=mode, batch_size=2, seq_len=8), "seq_len"
    base = base.model_copy(update={"attention_pattern": "chunked", "window": window})
    top = 10 * window

    def peak(n: int) -> int:
        update = {field: n} | ({"target_len": n} if spec.arch == "encoder-decoder" else {})
        return estimate(spec, base.model_copy(update=update)).peak_memory_bytes

    lo, hi = peak(1), peak(top)
    for usable in (lo + (hi - lo) * k // 6 for k in (1, 3, 5)):  # budgets across the range
        limit = max_context(spec, base, usable)
        prefix, last = _brute(spec, base, usable, field, top + window)
        assert limit.max_value == prefix and limit.next_value == prefix + 1
        assert (limit.longest_fitting or prefix) == last


def test_monotone_patterns_keep_the_plain_search() -> None:
    limit = max_context(LLAMA2, PREFILL.model_copy(update={"batch_size": 1}), 80 * GiB)
    assert limit.longest_fitting is None
