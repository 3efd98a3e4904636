"""Human units for the presentation layer: bytes in powers of 2, FLOPs and times in SI."""

from __future__ import annotations


def human_bytes(n: int | float | None) -> str:
    """1536 -> '1.50 KiB' (powers of 2: KiB, MiB, GiB, TiB); negative keeps its sign."""
    if n is None:
        return "-"
    sign, v = ("-" if n < 0 else ""), abs(n)
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= scale:
            return f"{sign}{v / scale:.2f} {unit}"
    return f"{sign}{int(v)} B"


def human_flops(n: int | float | None) -> str:
    """2.5e12 -> '2.50 TFLOP' (powers of 10)."""
    if n is None:
        return "-"
    for scale, unit in (
        (1e18, "EFLOP"),
        (1e15, "PFLOP"),
        (1e12, "TFLOP"),
        (1e9, "GFLOP"),
        (1e6, "MFLOP"),
    ):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} FLOP"


def human_seconds(s: float) -> str:
    """0.0123 -> '12.3 ms'; 90000 -> '1.04 d'."""
    for scale, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms")):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e6:.3g} us"
