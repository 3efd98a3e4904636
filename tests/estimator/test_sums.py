"""estimator/sums.py against estimator/shapes.py: the closed-form range sums equal the sums of
shapes' own ``cached_positions`` and ``attention_pairs``.

Oracles:
  brute force      the plain sum of shapes' function over the range (small exhaustive cases,
                   seeded random ranges up to ~10^5, short ranges near 10^12);
  piecewise Newton for huge ranges (hi ~ 10^12 .. 10^30): the range cut where shapes'
                   function changes formula (at the window; at multiples of the chunk), each
                   piece summed by Newton's forward differences, sum of f(a + j) for j < n
                   = sum_i C(n, i + 1) Delta^i f(a), from shapes' values at 4 points of the
                   piece (and its last value checked against the extrapolation); for chunks,
                   the whole chunks summed the same way over their per-chunk sums. No
                   Faulhaber formula of sums.py is reused.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import product
from math import comb

import pytest

from estimator.shapes import attention_pairs, cached_positions
from estimator.sums import sum_attention_pairs, sum_cached_positions

PATTERNS = ("full", "causal", "sliding_window", "chunked")
CONVENTIONS = ("full", "triangle")
ATTENTION_CASES = list(product(PATTERNS, (True, False), CONVENTIONS))


def _cached(pattern: str, window: int) -> Callable[[int], int]:
    return lambda x: cached_positions(pattern, window, x)


def _pairs(pattern: str, window: int, causal: bool, convention: str) -> Callable[[int], int]:
    return lambda s: attention_pairs(pattern, window, causal, s, convention)


def _brute(f: Callable[[int], int], lo: int, hi: int) -> int:
    return sum(f(x) for x in range(lo, hi + 1))


# --- brute force, exhaustive over small cases --------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
def test_sum_cached_positions_matches_brute_force_small(pattern: str) -> None:
    for window in range(1, 10):
        values = [0] + [cached_positions(pattern, window, x) for x in range(1, 41)]
        for lo in range(1, 26):
            for hi in range(lo - 1, 41):
                expected = sum(values[lo : hi + 1])
                assert sum_cached_positions(pattern, window, lo, hi) == expected, (window, lo, hi)


@pytest.mark.parametrize("pattern,causal,convention", ATTENTION_CASES)
def test_sum_attention_pairs_matches_brute_force_small(
    pattern: str, causal: bool, convention: str
) -> None:
    for window in range(1, 10):
        f = _pairs(pattern, window, causal, convention)
        values = [0] + [f(s) for s in range(1, 41)]
        for lo in range(1, 26):
            for hi in range(lo - 1, 41):
                got = sum_attention_pairs(pattern, window, causal, convention, lo, hi)
                assert got == sum(values[lo : hi + 1]), (window, lo, hi)


def test_full_and_causal_sums_ignore_a_missing_window_brute_force() -> None:
    for pattern, causal, convention in product(("full", "causal"), (True, False), CONVENTIONS):
        f = _pairs(pattern, None, causal, convention)
        assert sum_attention_pairs(pattern, None, causal, convention, 3, 17) == _brute(f, 3, 17)
        assert sum_cached_positions(pattern, None, 3, 17) == _brute(_cached(pattern, None), 3, 17)


# --- brute force, seeded random ranges -------------------------------------------------------


def _random_case(rng: random.Random) -> tuple[int, int, int]:
    """(window, lo, hi): windows up to 5000, ranges up to ~20,000 long, starting anywhere up
    to ~10^5, a third of them starting before the window so that they straddle it."""
    window = rng.choice((rng.randint(1, 50), rng.randint(1, 5000)))
    lo = rng.randint(1, 2 * window) if rng.random() < 1 / 3 else rng.randint(1, 100_000)
    hi = lo - 1 + rng.choice((rng.randint(0, 300), rng.randint(0, 20_000)))
    return window, lo, hi


def test_sum_cached_positions_matches_brute_force_random() -> None:
    rng = random.Random(20240611)
    for _ in range(200):
        pattern = rng.choice(PATTERNS)
        window, lo, hi = _random_case(rng)
        expected = _brute(_cached(pattern, window), lo, hi)
        assert sum_cached_positions(pattern, window, lo, hi) == expected, (pattern, window, lo, hi)


def test_sum_attention_pairs_matches_brute_force_random() -> None:
    rng = random.Random(1729)
    for _ in range(300):
        pattern, causal, convention = rng.choice(ATTENTION_CASES)
        window, lo, hi = _random_case(rng)
        expected = _brute(_pairs(pattern, window, causal, convention), lo, hi)
        got = sum_attention_pairs(pattern, window, causal, convention, lo, hi)
        assert got == expected, (pattern, causal, convention, window, lo, hi)


def test_sums_match_brute_force_on_short_ranges_near_10_to_the_12() -> None:
    rng = random.Random(7)
    for _ in range(40):
        window = rng.choice((1, 3, 4096, rng.randint(1, 10**6), 10**12 + rng.randint(-5, 5)))
        lo = 10**12 + rng.randint(-2000, 2000)
        hi = lo - 1 + rng.randint(0, 2000)
        for pattern in PATTERNS:
            got = sum_cached_positions(pattern, window, lo, hi)
            assert got == _brute(_cached(pattern, window), lo, hi), (pattern, window, lo, hi)
        for pattern, causal, convention in ATTENTION_CASES:
            f = _pairs(pattern, window, causal, convention)
            got = sum_attention_pairs(pattern, window, causal, convention, lo, hi)
            assert got == _brute(f, lo, hi), (pattern, causal, convention, window, lo, hi)


# --- piecewise Newton forward differences, huge ranges -------------------------------------


def _newton_sum(values: list[int], n: int) -> int:
    """sum of p(a + j) for j in 0..n - 1, p the polynomial of degree < len(values) with
    p(a + i) = values[i]: sum_i C(n, i + 1) Delta^i p(a)."""
    total, row = 0, list(values)
    for i in range(len(values)):
        total += comb(n, i + 1) * row[0]
        row = [b - a for a, b in zip(row, row[1:], strict=False)]
    return total


def _newton_at(values: list[int], j: int) -> int:
    """p(a + j), p as in _newton_sum: sum_i C(j, i) Delta^i p(a)."""
    total, row = 0, list(values)
    for i in range(len(values)):
        total += comb(j, i) * row[0]
        row = [b - a for a, b in zip(row, row[1:], strict=False)]
    return total


def _poly_piece(f: Callable[[int], int], a: int, b: int) -> int:
    """sum of f(x) for x in a..b, f a polynomial of degree <= 3 on a..b: from f at a..a + 3,
    with f(b) checked against the extrapolation (the oracle's own assumption)."""
    n = b - a + 1
    if n <= 5:
        return _brute(f, a, b)
    values = [f(a + i) for i in range(4)]
    assert _newton_at(values, n - 1) == f(b), "not one polynomial piece"
    return _newton_sum(values, n)


def _cut_sum(f: Callable[[int], int], lo: int, hi: int, cuts: list[int]) -> int:
    """sum of f over lo..hi, cut before each of ``cuts`` into polynomial pieces."""
    starts = sorted({lo, *(c for c in cuts if lo < c <= hi)})
    ends = [s - 1 for s in starts[1:]] + [hi]
    return sum(_poly_piece(f, a, b) for a, b in zip(starts, ends, strict=True)) if hi >= lo else 0


def _piecewise_newton(f: Callable[[int], int], pattern: str, w: int, lo: int, hi: int) -> int:
    """sum of f(x) for x in lo..hi, for f one of shapes' functions of ``pattern``: cut at the
    window (sliding window), or into a head, whole chunks [m w, m w + w - 1] (each one
    polynomial piece after its first length) and a tail (chunked)."""
    if pattern != "chunked":
        return _cut_sum(f, lo, hi, [w, w + 1] if pattern == "sliding_window" else [])
    first = -(-lo // w) * w  # the first multiple of w >= lo
    if first > hi:
        return _cut_sum(f, lo, hi, [])
    head = _cut_sum(f, lo, first - 1, [])
    whole = (hi - first + 1) // w

    def chunk(m: int) -> int:
        a = first + m * w
        return _cut_sum(f, a, a + w - 1, [a + 1])

    # a chunk's sum is a polynomial of degree <= 1 in its index: 3 of them give them all
    chunks = _newton_sum([chunk(m) for m in range(min(whole, 3))], whole) if whole else 0
    tail_start = first + whole * w
    return head + chunks + _cut_sum(f, tail_start, hi, [tail_start + 1])


def _huge_cases() -> list[tuple[int, int, int]]:
    """(window, lo, hi) with hi ~ 10^12 (some ~ 10^30): small and huge windows, ranges from
    the first length or from beyond the window, and ranges ending inside one chunk."""
    rng = random.Random(31337)
    cases = [
        (1, 1, 10**12),
        (7, 1, 10**12 + 3),
        (4096, 5, 10**12 - 1),
        (4096, 4096, 10**12),
        (4097, 4098, 3 * 10**12 + 11),
        (10**11 + 7, 1, 10**12),
        (10**11 + 7, 10**11 + 7, 10**12 + 1),
        (10**12, 10**12 - 5, 10**12 + 5),
        (3 * 10**12, 17, 10**12),
        (10**6 + 1, 10**6 - 3, 10**30),
        (13, 10**29, 10**30),
    ]
    for _ in range(15):
        window = rng.choice((rng.randint(1, 100), rng.randint(1, 10**6), rng.randint(1, 10**13)))
        lo = rng.choice((1, rng.randint(1, 2 * window), rng.randint(1, 10**12)))
        cases.append((window, lo, lo + rng.randint(0, 10**12)))
    return cases


@pytest.mark.parametrize("window,lo,hi", _huge_cases())
def test_sum_cached_positions_matches_piecewise_newton_huge(window: int, lo: int, hi: int) -> None:
    for pattern in PATTERNS:
        expected = _piecewise_newton(_cached(pattern, window), pattern, window, lo, hi)
        assert sum_cached_positions(pattern, window, lo, hi) == expected, pattern


@pytest.mark.parametrize("window,lo,hi", _huge_cases())
def test_sum_attention_pairs_matches_piecewise_newton_huge(window: int, lo: int, hi: int) -> None:
    for pattern, causal, convention in ATTENTION_CASES:
        f = _pairs(pattern, window, causal, convention)
        expected = _piecewise_newton(f, pattern, window, lo, hi)
        got = sum_attention_pairs(pattern, window, causal, convention, lo, hi)
        assert got == expected, (pattern, causal, convention)


def test_piecewise_newton_oracle_matches_brute_force() -> None:
    """The huge-range oracle itself, against the plain sum where both can run."""
    rng = random.Random(99)
    for _ in range(150):
        window = rng.randint(1, 60)
        lo = rng.randint(1, 300)
        hi = lo - 1 + rng.randint(0, 400)
        for pattern in PATTERNS:
            f = _cached(pattern, window)
            assert _piecewise_newton(f, pattern, window, lo, hi) == _brute(f, lo, hi)
        for pattern, causal, convention in ATTENTION_CASES:
            f = _pairs(pattern, window, causal, convention)
            assert _piecewise_newton(f, pattern, window, lo, hi) == _brute(f, lo, hi)


def test_huge_sums_split_anywhere_into_brute_forced_and_closed_parts() -> None:
    """sum(lo..hi) = brute force over lo..lo + 999 + the closed form over the rest, and the
    same with the brute-forced part at the end."""
    rng = random.Random(5)
    for _ in range(10):
        window = rng.randint(1, 5000)
        lo = rng.randint(1, 10**12)
        hi = lo + 10**12
        for pattern in PATTERNS:
            f = _cached(pattern, window)
            total = sum_cached_positions(pattern, window, lo, hi)
            assert total == _brute(f, lo, lo + 999) + sum_cached_positions(
                pattern, window, lo + 1000, hi
            )
            assert total == sum_cached_positions(pattern, window, lo, hi - 1000) + _brute(
                f, hi - 999, hi
            )
        for pattern, causal, convention in ATTENTION_CASES:
            f = _pairs(pattern, window, causal, convention)
            total = sum_attention_pairs(pattern, window, causal, convention, lo, hi)
            rest = sum_attention_pairs(pattern, window, causal, convention, lo + 1000, hi)
            assert total == _brute(f, lo, lo + 999) + rest


# --- errors ----------------------------------------------------------------------------------


def test_unknown_pattern_or_convention_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="banded"):
        sum_cached_positions("banded", 4, 1, 10)
    with pytest.raises(ValueError, match="banded"):
        sum_attention_pairs("banded", 4, True, "full", 1, 10)
    with pytest.raises(ValueError, match="trapezoid"):
        sum_attention_pairs("causal", None, True, "trapezoid", 1, 10)
    with pytest.raises(ValueError, match="trapezoid"):
        sum_attention_pairs("causal", None, True, "trapezoid", 5, 4)  # even for an empty range


def test_missing_window_or_length_zero_raises() -> None:
    for pattern in ("sliding_window", "chunked"):
        for window in (None, 0):
            with pytest.raises(ValueError, match=pattern):
                sum_cached_positions(pattern, window, 1, 10)
            with pytest.raises(ValueError, match=pattern):
                sum_attention_pairs(pattern, window, False, "triangle", 1, 10)
    with pytest.raises(ValueError, match="lo=0"):
        sum_cached_positions("full", None, 0, 10)
