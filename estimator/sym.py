"""Sizes as numbers or as symbols: the few operations whose symbolic form is not Python's.

The estimator's term functions, rules and replays compute with plain ints. estimator/compiled.py
runs them once more with symbolic sizes (``Sym``: a value at the traced point and a polynomial
of the sizes) to get each term as an expression it can evaluate at any point. Python's own
``max``, ``min`` and ``-(-x // c)`` would compare or divide the symbols and tie the expression to
the traced point; the helpers below keep the expression general instead. With ints they are
the builtins.
"""

from __future__ import annotations

from typing import Any


def vmax(*xs: Any) -> Any:
    """max(xs): for ints the builtin; with a symbol, an expression of every argument."""
    if all(type(x) is int for x in xs):
        return max(xs)
    from estimator.symbolic import sym_max

    return sym_max(xs)


def vmin(*xs: Any) -> Any:
    """min(xs): for ints the builtin; with a symbol, an expression of every argument."""
    if all(type(x) is int for x in xs):
        return min(xs)
    from estimator.symbolic import sym_min

    return sym_min(xs)


def ceil_div(x: Any, c: int) -> Any:
    """ceil(x / c) for a positive int c: -(-x // c)."""
    return -(-x // c)
