"""Data types and their sizes: the only place in tgauge where type sizes live.

A dtype carries bits (int4 = 4); bytes are ``ceil(numel * bits / 8)``, so int4 packs two
values per byte.
"""

from __future__ import annotations

from typing import Literal

DType = Literal["fp32", "fp16", "bf16", "int8", "int4"]
FloatDType = Literal["fp32", "fp16", "bf16"]
#: a KV cache may also be stored in 8-bit floats (vLLM's --kv-cache-dtype fp8, fp8_e4m3,
#: fp8_e5m2): one byte per element whichever the exponent/mantissa split
KVCacheDType = Literal["fp32", "fp16", "bf16", "fp8", "fp8_e4m3", "fp8_e5m2", "int8", "int4"]

BITS: dict[str, int] = {
    "fp32": 32,
    "tf32": 32,
    "fp16": 16,
    "bf16": 16,
    "fp8": 8,
    "fp8_e4m3": 8,
    "fp8_e5m2": 8,
    "int8": 8,
    "int4": 4,
}
DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "int4")
FLOAT_DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16")
KV_CACHE_DTYPES: tuple[str, ...] = (
    "fp32",
    "fp16",
    "bf16",
    "fp8",
    "fp8_e4m3",
    "fp8_e5m2",
    "int8",
    "int4",
)

#: bytes of the bookkeeping types torch uses for saved tensors
BOOL_BYTES = 1  # dropout masks are stored as torch.bool
INDEX_BYTES = 8  # int64 token ids, targets


def bits(dtype: str) -> int:
    """Bits per element of ``dtype``; raises ValueError naming the valid choices."""
    try:
        return BITS[dtype]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} is not known; use one of {', '.join(BITS)}") from None


def nbytes(numel: int, dtype: str) -> int:
    """Exact bytes of ``numel`` elements of ``dtype``: ceil(numel * bits / 8)."""
    return -(-numel * bits(dtype) // 8)
