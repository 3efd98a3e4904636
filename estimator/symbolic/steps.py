"""Closed-form sums over decode steps: ``sum_steps`` sums a step's terms over t = 1..N when
they are linear in t and in the step's (query, key) pairs (a step's FLOPs are), with the pairs'
sum from estimator/sums.py; ``Steps`` is the per-step value it leaves, as expressions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from estimator.symbolic.core import NotTraceable, Sym, _mk, current, value
from estimator.symbolic.maxima import Max, call_atom
from estimator.symbolic.poly import Poly


class Steps:
    """The per-step value of a closed-form step sum, a + b t + c pairs_at(prompt + t) for
    t = 1..n, as expressions of the sizes (estimator/compiled/ makes a StepSeries of it at
    each point). ``pairs_at``: the step's (query, key) pairs at a number of tokens seen (a
    function of the structure only, called with ints)."""

    __slots__ = ("a", "b", "c", "prompt", "n", "pairs_at")

    def __init__(
        self, a: Any, b: Any, c: Any, prompt: Any, n: Any, pairs_at: Callable[[int], int]
    ) -> None:
        self.a, self.b, self.c, self.prompt, self.n = a, b, c, prompt, n
        self.pairs_at = pairs_at


def _split(x: Any, t: int, q: int) -> tuple[Any, Any, Any]:
    """x = a + b t + c q with a, b, c free of t and q; NotTraceable when x is not linear."""
    if type(x) is not Sym:
        if type(x) is Max:
            raise NotTraceable("a maximum in a step sum")
        return x, 0, 0
    parts: list[Poly] = [{}, {}, {}]
    for m, c in x.p.items():
        hits = [i for i in m if i in (t, q)]
        if len(hits) > 1:
            raise NotTraceable("a step term not linear in the step")
        if not hits:
            parts[0][m] = c
            continue
        rest = list(m)
        rest.remove(hits[0])
        parts[1 if hits[0] == t else 2][tuple(rest)] = c
    summed = current().summed - {t, q}
    for part in parts:
        if any(i in summed for m in part for i in m):
            raise NotTraceable("an atom of the step in a step sum")
    return tuple(_mk(_eval(p), p) for p in parts)  # type: ignore[return-value]


def _eval(p: Poly) -> int:
    vals = current().values
    total = 0
    for m, c in p.items():
        for i in m:
            c *= vals[i]
        total += c
    return total


def sum_steps(
    step: Callable[[Any, Any], dict[str, Any]],
    prompt: Any,
    n: Any,
    pairs: tuple[Any, ...],
    pairs_at: Callable[[int], int],
) -> tuple[dict[str, Any], Steps]:
    """(sum over t = 1..n of ``step(prompt + t, q_t)``, term by term; the per-step total as
    ``Steps``), where q_t = ``pairs_at(prompt + t)`` is the step's (query, key) pairs and
    ``pairs`` names its closed-form sum in estimator/sums.py with the sum's leading constant
    arguments. Each term must be linear in t and q_t (a step's FLOPs are), and no decision
    inside ``step`` may depend on them; else NotTraceable."""
    tr = current()
    t = tr.var("t", 1)
    q = tr.var("q", pairs_at(value(prompt) + 1))
    ti, qi = len(tr.names) - 2, len(tr.names) - 1
    tr.summed |= {ti, qi}
    try:
        terms = step(prompt + t, q)
        split = {name: _split(x, ti, qi) for name, x in terms.items()}
    finally:
        tr.summed -= {ti, qi}
    n_tri = n * (n + 1) // 2  # sum of t over 1..n
    fn, consts = pairs[0], tuple(pairs[1:])
    lo, hi = prompt + 1, prompt + n
    v = _call_value(fn, consts, value(lo), value(hi))
    sum_q = call_atom(fn, (*consts, lo, hi), v) if type(lo) is Sym or type(hi) is Sym else v
    sums = {name: a * n + b * n_tri + c * sum_q for name, (a, b, c) in split.items()}
    total = [sum(p[i] for p in split.values()) for i in range(3)]
    return sums, Steps(total[0], total[1], total[2], prompt, n, pairs_at)


def _call_value(fn: str, consts: tuple[Any, ...], lo: int, hi: int) -> int:
    from estimator import sums

    return getattr(sums, fn)(*consts, lo, hi)
