"""Tensor parallelism and selective recomputation against Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models" (arXiv:2205.05198): per-layer saved
activations of one tensor-parallel rank, their GPT layer (LayerNorm, GELU 4h FFN, biases,
dropout on the probabilities and both residuals, fp16 activations, 1-byte masks: CUDA), for
the four models of their Table 3 (s = 2048, t = 8)."""

from __future__ import annotations

import pytest

from estimator import ModelSpec, Workload, estimate
from estimator.replay.backward import backward_walk
from estimator.shapes import resolve
from estimator.spec.dtypes import nbytes
from estimator.spec.errors import UnsupportedError
from estimator.spec.parallel import Parallel
from estimator.terms.memory import memory
from estimator.terms.params import params

# Table 3: (attention heads a, hidden size h, layers L, micro-batch b)
TABLE_3 = {
    "22B": (64, 6144, 48, 4),
    "175B": (96, 12288, 96, 1),
    "530B": (128, 20480, 105, 1),
    "1T": (160, 25600, 128, 1),
}
S, T = 2048, 8


def _layer_bytes(name: str, parallel: Parallel, checkpointing: str = "none") -> tuple[int, int]:
    """(one layer's saved bytes on rank 0, s b h) for the Table 3 model ``name``."""
    a, h, n_layers, b = TABLE_3[name]
    spec = ModelSpec(arch="decoder", n_decoder_layers=n_layers, d_model=h, n_heads=a,
                     d_ff=4 * h, vocab_size=51200, max_seq_len=S, position="learned",
                     norm="layernorm", activation="gelu")  # fmt: skip
    w = Workload(mode="train", batch_size=b, seq_len=S, dtype="fp16", dropout=0.1,
                 attention_impl="eager", device="cuda", checkpointing=checkpointing)  # fmt: skip
    terms = estimate(spec, w, parallel=parallel).memory.terms
    return sum(v for k, v in terms.items() if ".layers." in k) // n_layers, S * b * h


@pytest.mark.parametrize("name", TABLE_3)
def test_tensor_parallel_without_sp_is_korthikanti_eq_2(name: str) -> None:
    a, h, _, _ = TABLE_3[name]
    got, sbh = _layer_bytes(name, Parallel(world=T, tp=T))
    # eq. 2: s b h (10 + 24 / t + 5 a s / (h t)): 10 s b h stay whole on every rank (the
    # LayerNorm inputs 4, the attention and MLP inputs 4, the residual dropout masks 2)
    eq2 = sbh * (10 + 24 / T + 5 * a * S / (h * T))
    assert got == pytest.approx(eq2, rel=0.01)


@pytest.mark.parametrize("name", TABLE_3)
def test_selective_recomputation_with_sp_is_korthikanti_eq_4(name: str) -> None:
    got, sbh = _layer_bytes(
        name, Parallel(world=T, tp=T, sp=True, sp_input="shard"), checkpointing="selective"
    )
    # eq. 4: 34 s b h / t; 34 = 2 (LayerNorm 1 input) + 2 (the QKV matmul's input) + 2 + 2
    # + 2 (Q, K, V: the recomputed core's inputs) + 2 (output projection input) + 1 (its
    # dropout mask) + 2 (LayerNorm 2) + 2 (MLP input) + 8 (GELU input) + 8 (second MLP
    # matmul's input) + 1 (MLP dropout mask), each s b h bytes
    ln1, qkv_in, qkv, proj, drop1, ln2, mlp_in, gelu, fc2, drop2 = 2, 2, 6, 2, 1, 2, 2, 8, 8, 1
    eq4 = (ln1 + qkv_in + qkv + proj + drop1 + ln2 + mlp_in + gelu + fc2 + drop2) * sbh / T
    assert got == pytest.approx(eq4, rel=0.01)


def test_dtensor_sequence_parallel_saves_the_gathered_linear_inputs() -> None:
    # DTensor's ColwiseParallel after PrepareModuleInput(Shard(1) -> Replicate) saves the
    # all-gathered [n, d] input; Megatron-LM saves the rank's shard: 2 x (t - 1) / t x 2 s b h more
    shard, sbh = _layer_bytes("22B", Parallel(world=T, tp=T, sp=True, sp_input="shard"))
    gathered, _ = _layer_bytes("22B", Parallel(world=T, tp=T, sp=True))
    assert gathered - shard == 2 * (2 * sbh - 2 * sbh // T)


TINY = ModelSpec(arch="decoder", n_decoder_layers=2, d_model=16, n_heads=4, n_kv_heads=2,
                 d_ff=32, vocab_size=50, max_seq_len=64, position="rotary",
                 activation="swiglu", norm="rmsnorm")  # fmt: skip


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_selective_backward_walk_frees_every_activation_and_keeps_every_gradient(
    dropout: float,
) -> None:
    w = Workload(mode="train", batch_size=2, seq_len=8, checkpointing="selective",
                 dropout=dropout)  # fmt: skip
    sh = resolve(TINY, w)
    mem = memory(TINY, sh)
    saved = {k[len("activations.") :]: v for k, v in mem.items() if k.startswith("act")}
    grads = {k: nbytes(v, w.dtype) for k, v in params(TINY).terms.items()}
    live = backward_walk(TINY, sh, saved, grads, 10**9)
    assert live.now == 10**9 - sum(saved.values()) + sum(grads.values())
    # the recompute makes the core's whole saved set live again: above no-checkpointing's
    # freed-as-you-go walk is not required, but above its own start less the core's inputs
    none = estimate(TINY, w.model_copy(update={"checkpointing": "none"}))
    sel = estimate(TINY, w)
    assert sum(sel.memory.terms.values()) < sum(none.memory.terms.values())
    assert (
        sel.flops.terms["recompute.decoder.layers.self_attn.scores"]
        == (none.flops.terms["forward.decoder.layers.self_attn.scores"])
    )


def test_selective_with_fused_attention_is_refused_by_name() -> None:
    w = Workload(mode="train", seq_len=8, checkpointing="selective", attention_impl="fused")
    with pytest.raises(UnsupportedError, match="selective"):
        estimate(TINY, w)
