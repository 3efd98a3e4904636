"""Human units for the presentation layer: bytes in KiB/MiB/GiB (powers of 2), FLOPs in
GFLOP/TFLOP (powers of 10). The library stays in exact ints; only this module rounds."""

from __future__ import annotations

_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_DECIMAL = (("PFLOP", 10**15), ("TFLOP", 10**12), ("GFLOP", 10**9), ("MFLOP", 10**6))

#: stated once under every FLOP table
FLOP_UNITS_NOTE = "FLOP units are decimal: 1 GFLOP = 10^9, 1 TFLOP = 10^12 FLOPs"
BYTE_UNITS_NOTE = "byte units are binary: 1 KiB = 2^10, 1 MiB = 2^20, 1 GiB = 2^30 bytes"


def human_bytes(n_bytes: int) -> str:
    """'1.50 GiB', '512 B' (binary prefixes, never 'GB')."""
    for unit, size in _BINARY:
        if abs(n_bytes) >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes} B"


def human_flops(n_flops: int) -> str:
    """'6.12 TFLOP' (decimal prefixes)."""
    for unit, size in _DECIMAL:
        if abs(n_flops) >= size:
            return f"{n_flops / size:.2f} {unit}"
    return f"{n_flops} FLOP"


def human_count(n: int) -> str:
    """'124.44 M' parameters (decimal)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def share(part: int, total: int) -> str:
    """'12.3%' of total ('-' when the total is 0)."""
    return f"{100 * part / total:.1f}%" if total else "-"
