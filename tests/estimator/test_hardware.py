"""GPU presets, usable memory and the roofline on hand-worked cases."""

from __future__ import annotations

import json

import pytest

from estimator.hardware import (
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
    assert usable_bytes(get_gpu("l4"), none) == 24 * GiB


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
