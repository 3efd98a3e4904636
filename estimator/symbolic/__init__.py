"""Symbolic sizes: numbers that are a value at one point and a polynomial of the run's sizes.

estimator/compiled/ runs the estimator's own term functions, rules and replays once per
structure with the sizes (b, s, prompt, ...) made ``Sym``: each ``Sym`` carries its value at the
traced point and its polynomial in the size variables, with integer coefficients. Arithmetic
keeps both. Where the code makes a decision on a size (``if s > 1``, ``x // 3`` that does not
divide, ``min``), the decision is kept too:
  - a comparison returns its value at the traced point and records a guard (the comparison as
    an expression that must come out the same at any point the trace is reused for), unless
    it is decided for every point: the variables are sizes (>= 1), so a polynomial whose
    coefficients are all >= 0 once each variable is written 1 + y (y >= 0) is >= its value
    at all-ones everywhere;
  - an operation with no polynomial form (floor division or remainder that does not divide,
    ``vmin``) becomes an atom: a new variable defined by an expression of the earlier ones,
    computed at each point;
  - ``vmax`` of sizes is a ``Max``: the candidates none of the others provably exceeds (the
    peak of a live-bytes replay is one).
A trace is exact wherever its guards hold (the same code, with the same decisions, computes
the same numbers); estimator/compiled/ turns it into Python source evaluated per point.
Anything that would turn a size into a plain value without a guard (hashing it, ``float``)
raises ``NotTraceable``; ``int()`` and formatting specialise the trace to that value.

The parts: ``poly`` (polynomial arithmetic), ``core`` (the tracer, ``Sym``, comparisons and
sign proofs), ``maxima`` (``Max``, ``Choice``, ``sym_min``), ``steps`` (sums over decode steps).
"""

from __future__ import annotations

from estimator.symbolic.core import (
    Expr,
    NotTraceable,
    Sym,
    Tracer,
    current,
    expr_key,
    provably_ge,
    tracing,
    value,
)
from estimator.symbolic.maxima import Choice, Max, sym_max, sym_min, sym_pick
from estimator.symbolic.steps import Steps, sum_steps

__all__ = [
    "Choice",
    "Expr",
    "Max",
    "NotTraceable",
    "Steps",
    "Sym",
    "Tracer",
    "current",
    "expr_key",
    "provably_ge",
    "sum_steps",
    "sym_max",
    "sym_min",
    "sym_pick",
    "tracing",
    "value",
]
