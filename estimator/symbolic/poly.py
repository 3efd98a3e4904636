"""Polynomials of the size variables with integer coefficients: a dict from a monomial (the
sorted tuple of its variable indices) to its coefficient, and the arithmetic a trace needs."""

from __future__ import annotations

Poly = dict[tuple[int, ...], int]  # monomial (sorted variable indices) -> coefficient


def add(p: Poly, q: Poly, k: int = 1) -> Poly:
    """p + k q."""
    r = dict(p)
    for m, c in q.items():
        v = r.get(m, 0) + k * c
        if v:
            r[m] = v
        else:
            r.pop(m, None)
    return r


def scale(p: Poly, k: int) -> Poly:
    return {m: c * k for m, c in p.items()} if k else {}


def mul(p: Poly, q: Poly) -> Poly:
    r: Poly = {}
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            m = tuple(sorted(m1 + m2)) if m1 and m2 else (m1 or m2)
            v = r.get(m, 0) + c1 * c2
            if v:
                r[m] = v
            else:
                r.pop(m, None)
    return r


def const(k: int) -> Poly:
    return {(): k} if k else {}
