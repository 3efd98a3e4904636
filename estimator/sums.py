"""Sums over a range of sequence lengths of ``cached_positions`` and ``attention_pairs``
(estimator/shapes.py) in closed form: exact ints, a fixed number of arithmetic steps per call,
whatever the length of the range or the number of windows / chunks it spans.

What they are for: the total FLOPs of N decode steps after a prompt of P tokens, without
walking every step. Step t (1..N) with a KV cache attends to ``cached_positions(P + t)`` keys,
so the N steps together attend to ``sum_cached_positions(pattern, w, P + 1, P + N)`` keys;
without a cache step t re-runs a full self-attention pass over P + t tokens, together
``sum_attention_pairs(pattern, w, causal, convention, P + 1, P + N)`` (query, key) pairs.

The module is standalone (it imports nothing): it restates the two functions of shapes.py
only through these sums, which tests/estimator/test_sums.py checks against them.

Every sum over lo..hi is F(hi) - F(lo - 1), where F(n) = f(1) + ... + f(n) (F(0) = 0) is
built from
    S1(n) = n(n + 1)/2              sum of x        for x in 1..n
    S2(n) = n(n + 1)(2n + 1)/6      sum of x^2
    T(n)  = n(n + 1)(n + 2)/6       sum of x(x + 1)/2 (the triangular numbers)
with, for a sliding window w, m = min(n, w) and k = max(n - w, 0) (the lengths past the
window), and for a chunk c, n = q c + r with 0 <= r < c:

cached_positions
    full, causal        S1(n)
    sliding_window      S1(m) + k w                       (min(x, w))
    chunked             q S1(c) + S1(r)                   ((x - 1) % c + 1 runs 1..c, q times,
                                                           then 1..r)
attention_pairs, convention "full"
    full, causal,       S2(n)                             (s^2)
    sliding_window
    chunked             c^2 (c S1(q) + r (q + 1))         (ceil(s / c) c^2: ceil(s / c) is j
                                                           for c lengths, j = 1..q, then q + 1
                                                           for the last r)
attention_pairs, convention "triangle"
    full, causal        T(n) if causal else S2(n)         (s(s + 1)/2, s^2)
    sliding_window      causal: T(m) + k w(w + 1)/2 + w S1(k)
                        (s(s + 1)/2 up to w, then w(w + 1)/2 + (s - w) w)
                        non-causal: S2(n) - 2 T(k)
                        (s^2 - (s - w)(s - w + 1) past w, and sum of j(j + 1) = 2 T)
    chunked             t (c S1(q - 1) + q (r + 1)) + q G(c - 1) + G(r)
                        ((s // c) t + g(s % c) with t = c(c + 1)/2, g(x) = x(x + 1)/2,
                        G = T when causal, else t = c^2, g(x) = x^2, G = S2; s // c is j
                        for c lengths, j = 1..q - 1, then q for the last r + 1; s % c runs
                        0..c - 1 q times, then 0..r)
"""

from __future__ import annotations

PATTERNS = ("full", "causal", "sliding_window", "chunked")
CONVENTIONS = ("full", "triangle")


def _s1(n: int) -> int:
    """1 + 2 + ... + n = n(n + 1)/2 (0 for n = 0 and n = -1)."""
    return n * (n + 1) // 2


def _s2(n: int) -> int:
    """1^2 + 2^2 + ... + n^2 = n(n + 1)(2n + 1)/6."""
    return n * (n + 1) * (2 * n + 1) // 6


def _tri(n: int) -> int:
    """The first n triangular numbers, 1 + 3 + 6 + ... + n(n + 1)/2 = n(n + 1)(n + 2)/6."""
    return n * (n + 1) * (n + 2) // 6


def _check(pattern: str, window: int | None, lo: int, hi: int) -> None:
    """ValueError for an unknown pattern, a missing window, or lo < 1."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown attention pattern {pattern!r} (one of {', '.join(PATTERNS)})")
    if pattern in ("sliding_window", "chunked") and (window is None or window < 1):
        raise ValueError(f"pattern {pattern!r} needs a window >= 1, got {window!r}")
    if lo < 1:
        raise ValueError(f"the range starts at a length >= 1, got lo={lo!r}")


def _prefix_cached(pattern: str, w: int | None, n: int) -> int:
    """F(n) = sum of cached_positions(pattern, w, x) for x in 1..n (module docstring)."""
    if pattern == "sliding_window":
        if n <= w:
            return _s1(n)
        return _s1(w) + (n - w) * w
    if pattern == "chunked":
        q, r = divmod(n, w)
        return q * _s1(w) + _s1(r)
    return _s1(n)


def _prefix_pairs(pattern: str, w: int | None, causal: bool, triangle: bool, n: int) -> int:
    """F(n) = sum of attention_pairs(pattern, w, causal, s, convention) for s in 1..n."""
    if pattern == "chunked":
        q, r = divmod(n, w)
        if not triangle:
            return w * w * (w * _s1(q) + r * (q + 1))
        floors = w * _s1(q - 1) + q * (r + 1)  # sum of s // w
        if causal:
            return _s1(w) * floors + q * _tri(w - 1) + _tri(r)
        return w * w * floors + q * _s2(w - 1) + _s2(r)
    if not triangle:
        return _s2(n)
    if pattern == "sliding_window":
        k = n - w
        if causal:
            if k <= 0:
                return _tri(n)
            return _tri(w) + k * _s1(w) + w * _s1(k)
        return _s2(n) - 2 * _tri(k) if k > 0 else _s2(n)
    return _tri(n) if causal else _s2(n)


def sum_cached_positions(pattern: str, window: int | None, lo: int, hi: int) -> int:
    """sum(cached_positions(pattern, window, x) for x in range(lo, hi + 1)): the keys N
    decode steps attend to with a KV cache (lo = P + 1, hi = P + N), in O(1) as
    F(hi) - F(lo - 1) (module docstring); 0 for an empty range (hi < lo). ``window`` is the
    sliding window's width or the chunk size (unused by full and causal). ValueError for an
    unknown pattern, a missing window or lo < 1."""
    _check(pattern, window, lo, hi)
    if hi < lo:
        return 0
    return _prefix_cached(pattern, window, hi) - _prefix_cached(pattern, window, lo - 1)


def sum_attention_pairs(
    pattern: str, window: int | None, causal: bool, convention: str, lo: int, hi: int
) -> int:
    """sum(attention_pairs(pattern, window, causal, s, convention) for s in range(lo, hi + 1)):
    the (query, key) pairs per head of full passes over lo..hi tokens (decode without a
    cache), in O(1) as F(hi) - F(lo - 1) (module docstring); 0 for an empty range (hi < lo).
    ValueError for an unknown pattern or convention, a missing window or lo < 1."""
    _check(pattern, window, lo, hi)
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r} (one of full, triangle)")
    if hi < lo:
        return 0
    triangle = convention == "triangle"
    return _prefix_pairs(pattern, window, causal, triangle, hi) - _prefix_pairs(
        pattern, window, causal, triangle, lo - 1
    )
