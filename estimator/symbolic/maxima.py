"""Maxima and choices of symbolic values: ``Max`` (the candidates none of the others provably
exceeds; a replay's peak), ``Choice`` (the label of the largest value, chosen at each point; a
peak's phase), ``sym_min`` and the closed-form-sum atoms (see estimator/symbolic/__init__.py)."""

from __future__ import annotations

from typing import Any

from estimator.symbolic.core import (
    _PROBE,
    Expr,
    NotTraceable,
    Sym,
    current,
    expr_key,
    provably_ge,
    sign_at_least,
    value,
    variables_of,
)
from estimator.symbolic.core import _poly as _poly


class Max(Expr):
    """max(cands): its value at the traced point and the candidates (ints, Syms) that no
    other candidate provably exceeds."""

    __slots__ = ("v", "cands")

    def __init__(self, v: int, cands: tuple[Any, ...]) -> None:
        self.v, self.cands = v, cands

    def __repr__(self) -> str:
        return f"Max({self.v}, {self.cands})"

    def key(self) -> Any:
        return ("m", tuple(sorted(expr_key(c) for c in self.cands)))

    def variables(self) -> set[int]:
        return set().union(*(variables_of(c) for c in self.cands))

    def _shift(self, o: Any) -> Max:
        return Max(self.v + value(o), tuple(c + o for c in self.cands))

    def __add__(self, o: Any) -> Any:
        t = type(o)
        if t is int or t is Sym:
            return self._shift(o)
        if t is Max:
            return sym_max(tuple(a + b for a in self.cands for b in o.cands))
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, o: Any) -> Any:
        if type(o) in (int, Sym):
            return self._shift(-o)
        return NotImplemented

    def __mul__(self, o: Any) -> Any:
        if type(o) is int and o > 0:
            return Max(self.v * o, tuple(c * o for c in self.cands))
        if type(o) is int and o == 0:
            return 0
        return NotImplemented

    __rmul__ = __mul__

    def __index__(self) -> int:
        raise NotTraceable("int() of a maximum")


def _probed(x: Any) -> tuple[int, ...] | None:
    """x at a few points of the size domain (all sizes 1; all large; one large, the others
    1), or None when x has an atom: a candidate that is below another at one of them does
    not dominate it (checked before any sign proof)."""
    if type(x) is int:
        return None
    if x.probes is None:
        tracer = current()
        sizes = [i for i, d in enumerate(tracer.domain) if d == "size"]
        if any(tracer.domain[i] != "size" for m in x.p for i in m):
            x.probes = ()
        else:
            out = []
            for big in (None, -1, *sizes):  # -1: every size large
                total = 0
                for m, c in x.p.items():
                    for i in m:
                        c *= _PROBE if big == -1 or big == i else 1
                    total += c
                out.append(total)
            x.probes = tuple(out)
    return x.probes or None


def _dominates(k: Any, c: Any) -> bool:
    """k >= c at every point: a probe below disproves it, else the sign proof."""
    pk, pc = _probed(k), _probed(c)
    if pk is not None and pc is not None and any(a < b for a, b in zip(pk, pc, strict=True)):
        return False
    return provably_ge(k, c)


def sym_max(xs: tuple[Any, ...] | list[Any]) -> Any:
    """max(xs) of ints, Syms and Maxes: the candidates none of the others provably exceeds.
    The candidates of one Max argument do not dominate each other: they start the list."""
    xs = list(xs)
    first = max((i for i, x in enumerate(xs) if type(x) is Max), default=None,
                key=lambda i: len(xs[i].cands))  # fmt: skip
    kept: list[Any] = list(xs.pop(first).cands) if first is not None else []
    for x in xs:
        for c in x.cands if type(x) is Max else (x,):
            vc = value(c)  # only a candidate as large at the traced point can dominate
            if any(value(k) >= vc and _dominates(k, c) for k in kept):
                continue
            kept = [k for k in kept if value(k) > vc or not _dominates(c, k)]
            kept.append(c)
    if len(kept) == 1:
        return kept[0]
    return Max(max(value(c) for c in kept), tuple(kept))


class Choice(Expr):
    """The label of the largest of ``values`` (the first on ties), chosen at each point: a
    peak's phase. Comparing it with a label records a guard."""

    __slots__ = ("v", "values", "labels")

    def __init__(self, v: str, values: tuple[Any, ...], labels: tuple[str, ...]) -> None:
        self.v, self.values, self.labels = v, values, labels

    def __repr__(self) -> str:
        return f"Choice({self.v!r})"

    def key(self) -> Any:
        return ("c", expr_key(self.values), self.labels)

    def variables(self) -> set[int]:
        return set().union(*(variables_of(c) for c in self.values))

    def __eq__(self, o: object) -> bool:  # type: ignore[override]
        result = self.v == o
        current().guard(self, "==" if result else "!=", o)
        return result

    def __ne__(self, o: object) -> bool:  # type: ignore[override]
        return not self.__eq__(o)

    __hash__ = None  # type: ignore[assignment]


def sym_pick(pairs: Any) -> tuple[Any, Any]:
    """(max of the values, the Choice of its label) for (value, label) pairs."""
    values = tuple(v for v, _ in pairs)
    labels = tuple(label for _, label in pairs)
    best = max(range(len(values)), key=lambda i: value(values[i]))
    if len({*labels}) == 1:
        return sym_max(values), labels[0]
    return sym_max(values), Choice(labels[best], values, labels)


def sym_min(xs: tuple[Any, ...] | list[Any]) -> Any:
    """min(xs) of ints and Syms: the smallest when one is provably below the others, else
    an atom."""
    vals = list(xs)
    for x in vals:
        if all(provably_ge(y, x) for y in vals if y is not x):
            return x
    if any(type(x) is Max for x in vals):
        raise NotTraceable("min of a maximum")
    nonneg = all((sign_at_least(_poly(x)) is not None) if type(x) is Sym else x >= 0 for x in vals)
    v = min(value(x) for x in vals)
    return current().atom("min", tuple(vals), v, "nonneg" if nonneg else "any")


def call_atom(fn: str, args: tuple[Any, ...], v: int) -> Any:
    """An atom computed by the named function of estimator/sums.py (a closed-form sum, >= 0);
    ``args``: its constant leading arguments, then the sizes."""
    return current().atom(("call", fn), args, v, "nonneg")
