"""Optimizer states and step temporaries per (optimizer, impl), against hand formulas.

The measured twins: the validation matrix's `llama big-vocab train <optimizer> <impl>` cases
(reference model) and tests/profiler/test_prof_hf.py (Hugging Face Llama)."""

from __future__ import annotations

import math

import pytest

from estimator import estimate
from estimator.plan.capacity import Sharding, peak_bytes
from estimator.replay.optimizer_step import rank_step_temporaries, step_temporaries_bytes
from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload
from estimator.spec.presets import get_preset
from estimator.spec.workload import resolved_optimizer_impl
from estimator.terms.optimizer import state_terms
from estimator.terms.params import param_tensor_numels, param_tensor_shapes

LLAMA = ModelSpec(
    name="tiny-llama", arch="decoder", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
    d_ff=64, vocab_size=4096, max_seq_len=64, norm="rmsnorm", activation="swiglu",
    position="rotary", bias=False, tie_embeddings=False,
)  # fmt: skip


def _work(**fields) -> Workload:
    return Workload(mode="train", batch_size=1, seq_len=4, **fields)


@pytest.mark.parametrize(
    "optimizer,device,impl",
    [
        ("adamw", "cuda", "foreach"),  # _default_to_fused_or_foreach(use_fused=False)
        ("adamw", "cpu", "forloop"),  # cpu is no foreach device
        ("sgd-momentum", "cuda", "foreach"),
        ("sgd-momentum", "cpu", "forloop"),
        ("adafactor", "cuda", "forloop"),  # Adafactor: foreach only when asked
        ("adamw-8bit", "cuda", "fused"),
        ("none", "cuda", None),
    ],
)
def test_default_impl_is_what_torch_picks_on_the_device(optimizer, device, impl):
    assert resolved_optimizer_impl(_work(optimizer=optimizer, device=device)) == impl
    if optimizer != "none":
        assert (
            estimate(LLAMA, _work(optimizer=optimizer, device=device)).workload.optimizer_impl
            == impl
        )


@pytest.mark.parametrize("optimizer,impl", [("adafactor", "fused"), ("adamw-8bit", "foreach")])
def test_impl_an_optimizer_lacks_is_rejected_naming_the_field(optimizer, impl):
    with pytest.raises(ValueError, match="optimizer_impl="):  # SpecError in a ValidationError
        _work(optimizer=optimizer, optimizer_impl=impl)


def test_foreach_adamw_step_holds_one_more_exp_avg_sq():
    # adam.py _multi_tensor_adam: exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)
    for dtype in ("fp32", "bf16"):
        w = _work(optimizer="adamw", optimizer_impl="foreach", dtype=dtype)
        assert (
            step_temporaries_bytes(LLAMA, resolve(LLAMA, w))
            == estimate(LLAMA, w).memory.terms["optimizer.exp_avg_sq"]
        )


def test_forloop_adamw_step_holds_previous_denom_and_two_of_the_current():
    # adam.py _single_tensor_adam: denom = (exp_avg_sq.sqrt() / c).add_(eps), per tensor
    n = [4 * math.prod(s) for s in param_tensor_shapes(LLAMA)]
    by_hand = max([2 * n[0]] + [n[i - 1] + 2 * n[i] for i in range(1, len(n))])
    assert step_temporaries_bytes(LLAMA, resolve(LLAMA, _work(optimizer_impl="forloop"))) == by_hand


@pytest.mark.parametrize(
    "optimizer,impl",
    [("adamw", "fused"), ("adam", "fused")]
    + [(opt, impl) for opt in ("sgd", "sgd-momentum") for impl in ("fused", "foreach", "forloop")],
)
def test_in_place_steps_allocate_nothing(optimizer, impl):
    w = _work(optimizer=optimizer, optimizer_impl=impl)
    assert step_temporaries_bytes(LLAMA, resolve(LLAMA, w)) == 0


def test_adafactor_states_are_row_and_column_factors_per_matrix():
    terms = state_terms(LLAMA, resolve(LLAMA, _work(optimizer="adafactor")))
    shapes = param_tensor_shapes(LLAMA)
    matrices = [s for s in shapes if len(s) == 2]
    assert terms["optimizer.row_var"] == 4 * sum(r for r, _ in matrices)  # [r, 1]
    assert terms["optimizer.col_var"] == 4 * sum(c for _, c in matrices)  # [1, c]
    assert terms["optimizer.variance"] == 4 * sum(s[0] for s in shapes if len(s) == 1)
    assert terms["optimizer.step"] == 4 * len(shapes)


def test_adafactor_step_peaks_at_the_largest_matrix_estimate():
    # _single_tensor_adafactor at lm_head (last): row_mean [V, 1], col_mean [1, d],
    # var_estimate = row_var @ col_var [V, d] and row_var.mean(-2) [1, 1], while the previous
    # vector's grad_squared and update (the final norm's: [d] each) still live
    V, d = LLAMA.vocab_size, LLAMA.d_model
    w = _work(optimizer="adafactor", optimizer_impl="forloop")
    assert step_temporaries_bytes(LLAMA, resolve(LLAMA, w)) == 4 * (V + d + V * d + 1 + 2 * d)
    foreach = step_temporaries_bytes(
        LLAMA, resolve(LLAMA, w.model_copy(update={"optimizer_impl": "foreach"}))
    )
    matrices = sum(math.prod(s) for s in param_tensor_shapes(LLAMA) if len(s) > 1)
    assert foreach >= 4 * matrices  # var_estimates of the whole matrix group at once


def test_8bit_adamw_states_are_blockwise_bytes_with_absmax():
    # bitsandbytes optim/optimizer.py Optimizer2State.init_state
    terms = state_terms(LLAMA, resolve(LLAMA, _work(optimizer="adamw-8bit")))
    numels = param_tensor_numels(LLAMA)
    big = [n for n in numels if n >= 4096]
    small = [n for n in numels if n < 4096]
    assert terms["optimizer.state1"] == sum(big) + 4 * sum(small)
    assert terms["optimizer.absmax1"] == 4 * sum(math.ceil(n / 256) for n in big)
    assert terms["optimizer.qmap1"] == terms["optimizer.qmap2"] == 4 * 256


def test_foreach_step_beats_backward_for_a_7b_model_in_bf16():
    spec = get_preset("llama-2-7b")
    w = Workload(mode="train", seq_len=256, dtype="bf16", device="cuda")
    est = estimate(spec, w.model_copy(update={"optimizer_impl": "fused"}))
    fused, fused_phase = est.peak_memory_bytes, est.peak_phase
    est = estimate(spec, w)  # foreach, torch's default on cuda
    default, phase = est.peak_memory_bytes, est.peak_phase
    assert (fused_phase, phase) == ("backward", "optimizer_step")
    assert default - fused > 12 * 2**30  # a whole bf16 exp_avg_sq of 6.7 B parameters


def test_zero_sharded_step_temporaries_shrink_with_the_states():
    spec = get_preset("llama-2-7b")
    w = Workload(mode="train", seq_len=256, dtype="bf16", optimizer_impl="foreach")
    est = estimate(spec, w)
    one, _ = peak_bytes(est, Sharding(n_gpus=1))
    zero1, phase = peak_bytes(est, Sharding(n_gpus=8, zero=1))
    rank = estimate(spec, w, parallel=Sharding(n_gpus=8, zero=1).parallel())
    states, mine = est.memory.group("optimizer"), rank.memory.group("optimizer")
    temporaries = step_temporaries_bytes(spec, resolve(spec, w))
    assert phase == "optimizer_step"
    # rank 0 steps its ZeroRedundancyOptimizer partition: its states, and the temporaries
    # of the step replayed over the tensors of that partition (a for-loop / foreach step's
    # temporaries are those of the rank's own tensors, not a share of the whole model's)
    assert 0 < mine < states
    assert zero1 == rank.peak_memory_bytes < one
    own = rank_step_temporaries(spec, rank.parallel, resolve(spec, w))
    assert 0 < own < temporaries
