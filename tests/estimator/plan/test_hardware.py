"""GPU presets, usable memory and the roofline on hand-worked cases."""

from __future__ import annotations

import json

import pytest

from estimator.plan.hardware import (
    GPUS,
    MATH_DTYPES,
    Efficiency,
    Overheads,
    custom_gpu,
    get_gpu,
    roofline,
    unusable_terms,
    usable_bytes,
)
from estimator.spec import SpecError

MiB = 2**20
GiB = 2**30


@pytest.mark.parametrize("name", list(GPUS))
def test_presets_have_every_dtype_key_and_dense_bf16_twice_tf32(name: str) -> None:
    gpu = GPUS[name]
    assert set(gpu.peak_flops_per_s) == set(MATH_DTYPES)
    assert gpu.source
    # on every listed part the dense 16-bit tensor peak is 2x dense TF32 (datasheets round)
    assert gpu.peak("bf16") >= gpu.peak("fp32")
    assert gpu.peak("bf16") == pytest.approx(2 * gpu.peak("tf32"), rel=0.02)


def test_h100_sxm_bf16_is_the_dense_datasheet_half_of_1979_tflops() -> None:
    # H100 SXM datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity -> 989.5 dense
    assert get_gpu("h100").peak("bf16") == 989.5e12
    assert get_gpu("H100-SXM").bandwidth_bytes_per_s == 3.35e12


def test_a100_has_no_fp8_and_says_so() -> None:
    with pytest.raises(SpecError, match="fp8.*a100-80gb"):
        get_gpu("a100-80gb").peak("fp8")


def test_usable_bytes_is_total_minus_stated_terms_by_hand() -> None:
    # 80 GiB = 81920 MiB; minus 500 MiB context and 32 MiB workspace = 81388 MiB;
    # 5% allocator reserve of that: floor(81388 MiB * 0.05)
    rest = 81388 * MiB
    terms = unusable_terms(get_gpu("a100-80gb"))
    assert terms == {
        "cuda_context": 500 * MiB,
        "workspace": 32 * MiB,
        "allocator_reserve": int(rest * 0.05),
    }
    assert usable_bytes(get_gpu("a100-80gb")) == rest - int(rest * 0.05)


def test_usable_bytes_with_no_overheads_is_total() -> None:
    none = Overheads(cuda_context_bytes=0, workspace_bytes=0, allocator_reserve_fraction=0.0)
    # an L4 reports 23,034 MiB (nvidia-smi memory.total), not the 24 GB of its datasheet
    assert usable_bytes(get_gpu("l4"), none) == 23034 * 2**20


@pytest.mark.parametrize(
    ("name", "mib"),
    [("h200", 143771), ("l4", 23034), ("h100-sxm", 81559), ("a100-80gb", 81920)],
)
def test_gpu_memory_is_what_the_device_reports_with_its_source(name: str, mib: int) -> None:
    # nvidia-smi memory.total of each card, as its public outputs show it (issue 23)
    gpu = get_gpu(name)
    assert gpu.total_bytes == mib * 2**20
    assert f"{mib:,} MiB as nvidia-smi reports it" in gpu.source


def test_roofline_compute_bound_by_hand() -> None:
    # 1e15 FLOPs at 989.5e12 * 0.4 -> 2.52653... s; 16e9 bytes at 3.35e12 * 0.8 -> 5.97 ms
    r = roofline(10**15, 16 * 10**9, get_gpu("h100"), "bf16")
    assert r.compute_s == pytest.approx(1e15 / (989.5e12 * 0.4))
    assert r.memory_s == pytest.approx(16e9 / (3.35e12 * 0.8))
    assert r.bound == "compute" and r.time_s == r.compute_s


def test_roofline_memory_bound_decode_step_by_hand() -> None:
    # a 7B fp16 decode step at b=1: ~2 * 7e9 FLOPs, 14e9 bytes of weights read
    # compute 14e9 / (312e12 * 0.5) = 89.7 us; memory 14e9 / (2.039e12 * 0.9) = 7.63 ms
    eff = Efficiency(mfu=0.5, bw_util=0.9)
    r = roofline(14 * 10**9, 14 * 10**9, get_gpu("a100-80gb"), "fp16", eff)
    assert r.bound == "memory"
    assert r.time_s == pytest.approx(14e9 / (2.039e12 * 0.9))


def test_custom_gpu_from_json_file(tmp_path) -> None:
    path = tmp_path / "mygpu.json"
    path.write_text(
        json.dumps(
            {
                "name": "mine",
                "total_gib": 16,
                "bandwidth_tb_s": 0.5,
                "peak_tflops": {"fp32": 10, "bf16": 100},
            }
        )
    )
    gpu = get_gpu(str(path))
    assert gpu.total_bytes == 16 * GiB and gpu.peak("bf16") == 100e12
    assert gpu.peak_flops_per_s["fp8"] is None


def test_custom_gpu_missing_bandwidth_names_the_field() -> None:
    with pytest.raises(SpecError, match="bandwidth_bytes_per_s"):
        custom_gpu(total_gib=8, peak_tflops={"fp32": 1})


def test_unknown_gpu_lists_presets() -> None:
    with pytest.raises(SpecError, match="h100-sxm"):
        get_gpu("tpu-v5")


def test_decode_step_reads_weights_and_cache_by_hand() -> None:
    from estimator.estimate import estimate
    from estimator.plan.hardware import step_times
    from estimator.spec import Workload
    from estimator.spec.presets import get_preset

    # Llama-2-7B fp16, b=1, P=1024: step 1 reads the 13,476,831,232 weight bytes and the
    # cache of 1025 positions * 524,288 bytes (2 * 32 layers * 32 heads * 128 * 2 bytes)
    wl = Workload(mode="decode", dtype="fp16", prompt_len=1024, new_tokens=2)
    times = step_times(estimate(get_preset("llama-2-7b"), wl), get_gpu("a100-80gb"))
    first = times.decode_steps[0]
    assert first.bytes_moved == 13_476_831_232 + 1025 * 524_288
    assert first.bound == "memory"
    assert first.time_s == pytest.approx(first.bytes_moved / (2.039e12 * 0.8))
    assert times.tokens == 2
    assert times.total_s == pytest.approx(
        times.step.time_s + sum(s.time_s for s in times.decode_steps)
    )


def test_train_bytes_moved_by_hand() -> None:
    from estimator.plan.hardware import train_bytes_moved

    # W=10, G=10, O=20+20, A=7: 2W + G + (G + 2 O + 2 W) + 2 A = 20+10+10+80+20+14 = 154
    terms = {
        "weights": 10,
        "gradients": 10,
        "optimizer.exp_avg": 20,
        "optimizer.exp_avg_sq": 20,
        "activations.x": 7,
    }
    assert train_bytes_moved(terms, recompute=False) == 154
    assert train_bytes_moved(terms, recompute=True) == 164


def test_training_time_for_a_token_budget_by_hand() -> None:
    from estimator.plan.hardware import StepTimes, training_time_s

    step = roofline(10**15, 0, get_gpu("h100"), "bf16", Efficiency(mfu=0.5))
    times = StepTimes(gpu="h100-sxm", mode="train", step=step, total_s=step.time_s, tokens=4096)
    # 1e6 tokens / (4096 tokens * 2 GPUs) = 122.07 -> 123 steps of 1e15 / 494.75e12 s
    assert training_time_s(times, 10**6, n_gpus=2) == pytest.approx(123 * 1e15 / 494.75e12)
