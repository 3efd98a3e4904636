"""Per-rank estimates (estimate(parallel=...)): hand-derived shards and collectives on a tiny
decoder, and the rank's own peak.

TINY: d = 8, h = h_kv = 2 (d_h = 4), d_ff = 10, V = 11, L = 2, SwiGLU, RMSNorm, untied head,
fp32. Its tensors: embed [11, 8]; per layer attn_norm [8], q, k, v, o [8, 8], ffn_norm [8],
up, gate [10, 8], down [8, 10]; final_norm [8]; lm_head [11, 8]: 21 tensors, 1208 elements
(a layer 512, the root 184).
"""

from __future__ import annotations

import pytest

from estimator import ModelSpec, Workload, estimate, get_preset
from estimator.shapes import resolve
from estimator.spec.errors import UnsupportedError
from estimator.spec.parallel import Parallel
from estimator.terms.memory import group, input_bytes
from estimator.terms.ranks import Gathers, local_params

TINY = ModelSpec(arch="decoder", n_decoder_layers=2, d_model=8, n_heads=2, n_kv_heads=2,
                 d_ff=10, vocab_size=11, max_seq_len=64, position="rotary",
                 activation="swiglu", norm="rmsnorm", bias=False,
                 tie_embeddings=False)  # fmt: skip
W = Workload(mode="train", batch_size=1, seq_len=4, dtype="fp32")
F32 = 4


def comm(p: Parallel, w: Workload = W) -> dict[str, int]:
    return {k: v for k, v in estimate(TINY, w, parallel=p).comm.items() if v}


def test_one_rank_of_plain_data_parallel_is_the_single_device_estimate() -> None:
    for spec in (TINY, get_preset("gpt2-small")):
        w = W.model_copy(update={"seq_len": 16, "batch_size": 2})
        one, rank = estimate(spec, w), estimate(spec, w, parallel=Parallel(world=2))
        assert rank.memory.terms == one.memory.terms
        # + DDP's gradient buckets: one flat copy of every gradient, the whole step
        buckets = one.memory.terms["gradients"]
        assert rank.peak_memory_bytes == one.peak_memory_bytes + buckets
        assert rank.peak_phase == one.peak_phase
        assert rank.flops.terms == one.flops.terms


def test_fsdp2_shards_are_padded_to_ceil_dim0_over_world() -> None:
    # world 4, rank 0: ceil(dim0 / 4) rows of each tensor. Layer: attn_norm 2, q k v o
    # 4 x 2 x 8, ffn_norm 2, up gate 2 x 3 x 8, down 2 x 10 = 136; root: embed 3 x 8,
    # final_norm 2, lm_head 3 x 8 = 50; 50 + 2 x 136 = 322 elements
    est = estimate(TINY, W, parallel=Parallel(world=4, shard="zero3"))
    t = est.memory.terms
    assert t["weights"] == t["gradients"] == 322 * F32
    assert t["optimizer.exp_avg"] == t["optimizer.exp_avg_sq"] == 322 * F32
    assert t["optimizer.step"] == 21 * F32  # one fp32 step per (sharded) tensor


def test_fsdp2_collectives_per_unit() -> None:
    # all-gather output = 4 x the unit's padded shard: root 4 x 50, a layer 4 x 136 (fp32)
    root, layer = 4 * 50 * F32, 4 * 136 * F32
    assert comm(Parallel(world=4, shard="zero3")) == {
        "comm.all_gather.count": 1 + 2 * 2,  # root once; each layer in forward and backward
        "comm.all_gather.bytes": root + 4 * layer,
        "comm.reduce_scatter.count": 3,
        "comm.reduce_scatter.bytes": root + 2 * layer,
    }
    assert comm(Parallel(world=4, shard="zero2")) == {
        "comm.all_gather.count": 3,  # kept gathered from forward to backward
        "comm.all_gather.bytes": root + 2 * layer,
        "comm.reduce_scatter.count": 3,
        "comm.reduce_scatter.bytes": root + 2 * layer,
    }
    # the recompute finds its layer already unsharded: no more all-gathers
    full = W.model_copy(update={"checkpointing": "full"})
    assert comm(Parallel(world=4, shard="zero3"), full) == comm(Parallel(world=4, shard="zero3"))


def test_zero1_partitions_whole_tensors_greedily() -> None:
    # ZeroRedundancyOptimizer over 2 ranks, largest first to the emptier rank: embed 88 ->
    # r0, lm_head 88 -> r1, the six 80s alternate (3 each), the eight 64s (4 each), the
    # five norms r0 r1 r0 r1 r0: rank 0 owns 88 + 240 + 256 + 24 = 608 elements, 11 tensors
    est = estimate(TINY, W, parallel=Parallel(world=2, shard="zero1"))
    t = est.memory.terms
    assert t["weights"] == t["gradients"] == 1208 * F32  # not sharded
    assert t["optimizer.exp_avg"] == 608 * F32 and t["optimizer.step"] == 11 * F32
    assert comm(Parallel(world=2, shard="zero1")) == {
        "comm.all_reduce.count": 1,  # DDP: 4832 gradient bytes fill one (first) bucket
        "comm.all_reduce.bytes": 1208 * F32,
        "comm.broadcast.count": 21,  # _sync_params: every tensor from its owner
        "comm.broadcast.bytes": 1208 * F32,
    }


def test_tensor_parallel_local_shapes_and_collectives() -> None:
    # tp 2: q k v up gate rows / 2, o down columns / 2, embed and lm_head rows ceil(11 / 2) = 6,
    # norms replicated. Layer 8 + 4 x 32 + 8 + 3 x 40 = 264; root 48 + 8 + 48 = 104
    est = estimate(TINY, W, parallel=Parallel(world=2, tp=2))
    assert est.memory.terms["weights"] == (104 + 2 * 264) * F32
    # [n, d] and [n, V] in fp32, n = b s = 4; the logits' 11 columns padded to 2 x 6 = 12
    nd, logits = 4 * 8 * F32, 4 * 12 * F32
    assert comm(Parallel(world=2, tp=2)) == {
        # per layer 2 forward (o_proj, down) + 5 backward (the input grads of q, k, v, up,
        # gate, one each); the embedding's forward, the head's input grad
        "comm.all_reduce.count": 2 * 7 + 2,
        "comm.all_reduce.bytes": (2 * 7 + 2) * nd,
        "comm.all_gather.count": 1,  # the logits (output Replicate)
        "comm.all_gather.bytes": logits,
    }
    sp = {
        "comm.all_gather.count": 2 * 4 + 2 + 1,  # per layer 2 fwd + 2 bwd; embed bwd, head in
        "comm.all_gather.bytes": (2 * 4 + 2) * nd + logits,
        "comm.reduce_scatter.count": 2 * 4 + 1,  # per layer 2 fwd + 2 bwd; the head's grad
        "comm.reduce_scatter.bytes": (2 * 4 + 1) * nd,
        # the embedding's output (Replicate, then split); AdamW's 3 reads of each of the 5
        # RMSNorm weights' Partial gradients
        "comm.all_reduce.count": 1 + 3 * 5,
        "comm.all_reduce.bytes": nd + 3 * 5 * 8 * F32,
    }
    assert comm(Parallel(world=2, tp=2, sp=True)) == sp
    full = W.model_copy(update={"checkpointing": "full"})  # the recompute's forward again
    again = comm(Parallel(world=2, tp=2, sp=True), full)
    assert again["comm.all_gather.count"] == sp["comm.all_gather.count"] + 2 * 2
    assert again["comm.reduce_scatter.count"] == sp["comm.reduce_scatter.count"] + 2 * 2
    lp = comm(Parallel(world=2, tp=2, loss_parallel=True))
    assert "comm.all_gather.count" not in lp  # the logits stay vocabulary-sharded
    assert lp["comm.all_reduce.count"] == 2 * 7 + 2 + 3  # + max, sum exp, target log-prob


def test_fsdp_over_tensor_parallel_shards_the_local_tensors() -> None:
    # world 4 = dp 2 x tp 2: the tp-local tensors chunked on dim 0 by 2. Layer: norms 4 + 4,
    # q k v [4, 8] -> 2 x 8 each, o [8, 4] -> 4 x 4, up gate [5, 8] -> 3 x 8, down [8, 5]
    # -> 4 x 5: 140; root: embed [6, 8] -> 24, final_norm 4, lm_head 24: 52
    est = estimate(TINY, W, parallel=Parallel(world=4, tp=2, shard="zero3"))
    assert est.memory.terms["weights"] == (52 + 2 * 140) * F32
    c = est.comm
    assert c["comm.reduce_scatter.bytes"] == 2 * (52 + 2 * 140) * F32
    assert c["comm.all_reduce.count"] == 2 * 7 + 2  # the tensor-parallel ones


def test_tensor_parallel_activations_are_those_of_the_local_widths() -> None:
    # without sp a rank's layer computes h / t heads and d_ff / t columns; the norms' and
    # the q / up projections' inputs [n, d] stay whole on every rank
    one = estimate(TINY, W).memory.terms
    tp = estimate(TINY, W, parallel=Parallel(world=2, tp=2)).memory.terms
    for k in ("attn_norm", "self_attn.q_proj", "ffn_norm", "ffn.gate"):
        assert tp[f"activations.decoder.layers.{k}"] == one[f"activations.decoder.layers.{k}"]
    for k in ("self_attn.o_proj", "ffn.down", "ffn.act"):
        assert 2 * tp[f"activations.decoder.layers.{k}"] == one[f"activations.decoder.layers.{k}"]


def test_fsdp2_peak_at_1024_gpus_is_the_backward_start_with_what_fsdp2_gathers() -> None:
    # issue 18: the peak was 15.56 GiB over 2.66 GiB of terms (unsharded gradients replayed).
    # Now: the rank's states + activations (no gradient yet) + the root unit gathered (embed,
    # final norm, lm_head in bf16: 1.97 GiB) + the last layer prefetched by the root's
    # pre_backward (0.41 GiB) + d(log-probs) and d(logits) [4096, 128256] bf16, less the
    # targets nll_loss_backward has freed
    spec = get_preset("llama-3-8b")
    w = Workload(mode="train", seq_len=4096, dtype="bf16", master_weights=True,
                 attention_impl="fused", checkpointing="full")  # fmt: skip
    p = Parallel(world=1024, shard="zero3")
    est = estimate(spec, w, parallel=p)
    t, sh = est.memory.terms, resolve(spec, w)
    g = Gathers(spec, p, "bf16", "fp32")
    # V = 128256 rows padded to 1024 x ceil(128256 / 1024) = 1024 x 126; the norm's 4096
    assert g.root == (2 * 1024 * 126 * 4096 + 4096) * 2
    start = (t["weights"] + group(t, "optimizer") + input_bytes(spec, sh)
             + group(t, "activations") - t["activations.embed"])  # fmt: skip
    logit_grads = 2 * 4096 * 128256 * 2
    # nll_loss_backward frees the targets [4096] int64 and total_weight (bf16) before
    # log_softmax_backward makes d(logits) (issue 22l, estimator/replay/peak.py)
    targets = 4096 * 8 + 2
    assert est.peak_phase == "backward"
    assert est.peak_memory_bytes == start + g.root + g.block["decoder"] + logit_grads - targets


def test_parallel_inference_and_fused_qkv_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedError, match="training"):
        estimate(TINY, Workload(mode="prefill", seq_len=4), parallel=Parallel(world=2, tp=2))
    with pytest.raises(UnsupportedError, match="tp=4 must divide n_heads"):
        estimate(TINY, W, parallel=Parallel(world=4, tp=4))


def test_collective_time_is_the_ring_bus_bandwidth_of_its_group() -> None:
    from estimator.plan.hardware import comm_times, custom_gpu, roofline

    # nodes of 2 GPUs: links 1 GB/s inside, 0.1 GB/s between nodes
    gpu = custom_gpu(total_gib=1, peak_tflops={"fp32": 1}, bandwidth_tb_s=1,
                     link_bytes_per_s=1e9, network_bytes_per_s=1e8, gpus_per_node=2)  # fmt: skip
    fsdp = estimate(TINY, W, parallel=Parallel(world=4, shard="zero3"))
    c = fsdp.comm  # 4 ranks span 2 nodes: the network; (n - 1) / n of S through each NIC
    ring = (c["comm.all_gather.bytes"] + c["comm.reduce_scatter.bytes"]) * 3 / 4
    assert comm_times(fsdp, gpu) == (pytest.approx(ring / 1e8), 0.0)
    tp = estimate(TINY, W, parallel=Parallel(world=2, tp=2))
    c = tp.comm  # inside a node; all_reduce 2 (n - 1) / n, all_gather (n - 1) / n
    serial = (c["comm.all_reduce.bytes"] * 1 + c["comm.all_gather.bytes"] / 2) / 1e9
    assert comm_times(tp, gpu) == (0.0, pytest.approx(serial))
    assert comm_times(estimate(TINY, W), gpu) == (0.0, 0.0)
    step = roofline(10**6, 10**6, gpu, "fp32", comm_s=(1.0, 0.5))  # 2.5 us compute, 1.25 memory
    assert step.bound == "communication" and step.time_s == 1.5


def test_every_rank_has_its_own_uneven_shards() -> None:
    # issue 18i: Parallel.rank. torch.chunk gives the last ranks fewer rows: rank 3 of 4 under
    # FSDP2 holds of up / gate [10, 8] 10 - 3 x 3 = 1 row, of embed / lm_head [11, 8] 2 rows.
    # Layer: norms 2 + 2, q k v o 4 x 16, up gate 2 x 8, down 2 x 10 = 104; root: embed 16,
    # final_norm 2, lm_head 16 = 34; 34 + 2 x 104 = 242 elements (rank 0: 322)
    p = Parallel(world=4, shard="zero3", rank=3)
    t = estimate(TINY, W, parallel=p).memory.terms
    assert t["weights"] == t["gradients"] == 322 * F32  # padded storage: the same on every rank
    assert t["optimizer.exp_avg"] == 242 * F32  # zeros_like the unpadded shard
    assert local_params(TINY, p) == 242
    # ZeRO-1 rank 1 of 2 owns what rank 0 does not: 1208 - 608 elements, 21 - 11 tensors
    t = estimate(TINY, W, parallel=Parallel(world=2, shard="zero1", rank=1)).memory.terms
    assert t["optimizer.exp_avg"] == 600 * F32 and t["optimizer.step"] == 10 * F32
    # TP rank 1 of 2: embed and lm_head 5 of 11 rows (rank 0: 6), stored in 6 (DTensor pads)
    t = estimate(TINY, W, parallel=Parallel(world=2, tp=2, rank=1)).memory.terms
    assert t["weights"] == (104 + 2 * 264) * F32
    assert t["gradients"] == (88 + 2 * 264) * F32
    assert local_params(TINY, Parallel(world=2, tp=2, rank=1)) == 88 + 2 * 264
    with pytest.raises(ValueError, match="rank=2 must be below world=2"):
        Parallel(world=2, rank=2)
