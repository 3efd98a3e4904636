"""FSDP2 units of torchtitan's ``apply_fsdp`` (``Parallel.wrap="torchtitan"``) against hand
counts, and a rank's peak named by label (``Estimate.peak_parts``).

TINY (tests/estimator/terms/test_ranks.py): d = 8, h = h_kv = 2, d_ff = 10, V = 11, L = 2,
SwiGLU, RMSNorm, untied head, fp32: embed [11, 8]; per layer attn_norm [8], q, k, v, o
[8, 8], ffn_norm [8], up, gate [10, 8], down [8, 10]; final_norm [8]; lm_head [11, 8].
"""

from __future__ import annotations

import pytest

from estimator import ModelSpec, Workload, estimate, get_preset
from estimator.rules.live import ACTS, D_LOGITS, D_LOGPROBS, GATHERED, LOGITS
from estimator.spec.errors import UnsupportedError
from estimator.spec.parallel import Parallel
from estimator.terms.ranks import EMBED, HEAD, unit_bytes

TINY = ModelSpec(arch="decoder", n_decoder_layers=2, d_model=8, n_heads=2, n_kv_heads=2,
                 d_ff=10, vocab_size=11, max_seq_len=64, position="rotary",
                 activation="swiglu", norm="rmsnorm", bias=False,
                 tie_embeddings=False)  # fmt: skip
W = Workload(mode="train", batch_size=1, seq_len=4, dtype="fp32")
F32 = 4
TITAN3 = Parallel(world=2, shard="zero3", wrap="torchtitan")


def test_torchtitan_units_are_the_embedding_and_the_norm_with_the_head() -> None:
    units = unit_bytes(TINY, TITAN3, "fp32")
    assert set(units) == {EMBED, "decoder.layers", HEAD}  # nothing left at the root
    # embed [11, 8] on 2 ranks: ceil(11 / 2) = 6 rows padded -> 48 elements a rank
    assert units[EMBED] == {"shard": 48 * F32, "gathered": 96 * F32, "grads": 88 * F32}
    # final_norm [8] -> 4, lm_head [11, 8] -> 6 rows x 8 = 48
    assert units[HEAD] == {"shard": 52 * F32, "gathered": 104 * F32, "grads": 96 * F32}


def test_torchtitan_collectives_match_hand_counts() -> None:
    comm = estimate(TINY, W, parallel=TITAN3).comm
    layer = 512 * F32  # a layer's gathered parameters (every dim 0 even on 2 ranks)
    # zero3: the layers and the embedding gathered in forward and again in backward, the norm
    # + head unit once (never resharded after forward); one reduce-scatter per unit
    assert comm["comm.all_gather.count"] == 2 * 2 + 2 + 1
    assert comm["comm.all_gather.bytes"] == 2 * 2 * layer + 2 * 96 * F32 + 104 * F32
    assert comm["comm.reduce_scatter.count"] == 2 + 1 + 1
    assert comm["comm.reduce_scatter.bytes"] == 2 * layer + 96 * F32 + 104 * F32
    zero2 = estimate(TINY, W, parallel=TITAN3.model_copy(update={"shard": "zero2"})).comm
    assert zero2["comm.all_gather.count"] == 2 + 1 + 1  # gathered once each


def test_wrap_names_fsdp2_units_and_needs_zero2_or_zero3() -> None:
    with pytest.raises(ValueError, match="wrap='torchtitan'"):
        Parallel(world=2, shard="zero1", wrap="torchtitan")


def test_torchtitan_wrap_refuses_a_model_without_its_units() -> None:
    with pytest.raises(UnsupportedError, match="wrap='torchtitan'"):
        estimate(TINY.model_copy(update={"final_norm": False}), W, parallel=TITAN3)


def test_wrap_changes_nothing_but_the_units_of_the_state() -> None:
    blocks = estimate(TINY, W, parallel=Parallel(world=2, shard="zero3"))
    titan = estimate(TINY, W, parallel=TITAN3)
    assert titan.memory.terms == blocks.memory.terms


LLAMA8 = Workload(
    mode="train",
    batch_size=1,
    seq_len=4096,
    dtype="bf16",
    master_weights=True,
    attention_impl="fused",
    checkpointing="full",
)


@pytest.mark.parametrize("wrap", ["blocks", "torchtitan"])
def test_8b_peak_parts_name_the_gathered_units_and_the_vocabulary_tensors(wrap: str) -> None:
    """Issue 18's fit llama-3-8b --gpus 1024 --zero 3: what lies above the per-GPU terms is
    named, and is the engine's: the gathered units and the [s, V] / [V, d] tensors."""
    spec = get_preset("llama-3-8b")
    p = Parallel(world=1024, shard="zero3", wrap=wrap)
    est = estimate(spec, LLAMA8, parallel=p)
    parts, units = est.peak_parts, unit_bytes(spec, p, "bf16")
    sv = 4096 * spec.vocab_size * 2  # one [s, V] tensor in bf16
    acts = sum(v for k, v in est.memory.terms.items() if k.startswith("activations."))
    resident = sum(v for k, v in est.memory.terms.items() if k.startswith(("weights", "optim")))
    # backward: nll_loss_backward has freed the targets [s] int64 and total_weight (bf16)
    # before log_softmax_backward's d(logits) (issue 22l, estimator/replay/peak.py)
    assert parts[ACTS] == acts - (4096 * 8 + 2 if wrap == "blocks" else 0)
    if wrap == "blocks":  # backward, the loss's two gradients: the root (embedding and head)
        # and the last layer, prefetched by the root's pre_backward, still gathered
        assert est.peak_phase == "backward"
        assert parts[D_LOGPROBS] == parts[D_LOGITS] == sv
        assert parts[GATHERED] == units["root"]["gathered"] + units["decoder.layers"]["gathered"]
    else:  # forward, at the loss: the logits, the head unit and its kept all-gather output
        assert est.peak_phase == "forward"
        assert parts[LOGITS] == sv
        assert parts[GATHERED] == 2 * units[HEAD]["gathered"]
    assert resident + sum(parts.values()) == est.peak_memory_bytes
