"""Symbolic sizes: numbers that are a value at one point and a polynomial of the run's sizes.

estimator/compiled.py runs the estimator's own term functions, rules and replays once per
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
the same numbers); estimator/compiled.py turns it into Python source evaluated per point.
Anything that would turn a size into a plain value without a guard (hashing it, ``float``)
raises ``NotTraceable``; ``int()`` and formatting specialise the trace to that value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

Poly = dict[tuple[int, ...], int]  # monomial (sorted variable indices) -> coefficient


class NotTraceable(Exception):
    """The code did something with a size that a trace cannot keep general."""


# ---- polynomials ------------------------------------------------------------------------
def _add(p: Poly, q: Poly, k: int = 1) -> Poly:
    """p + k q."""
    r = dict(p)
    for m, c in q.items():
        v = r.get(m, 0) + k * c
        if v:
            r[m] = v
        else:
            r.pop(m, None)
    return r


def _scale(p: Poly, k: int) -> Poly:
    return {m: c * k for m, c in p.items()} if k else {}


def _mul(p: Poly, q: Poly) -> Poly:
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


def _const(k: int) -> Poly:
    return {(): k} if k else {}


# ---- the tracer: variables, atoms, guards ------------------------------------------------
class Tracer:
    """The variables of one trace (sizes, then atoms) and the guards it recorded.

    ``domain[i]``: "size" (an integer >= 1), "nonneg" (an atom >= 0) or "any" (an atom of
    unknown sign). ``defs[i]``: None for a size, else (kind, args) of an atom. ``summed``: the
    variables a closed-form sum runs over (a guard on them cannot be kept)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.defs: list[tuple[str, tuple[Any, ...]] | None] = []
        self.domain: list[str] = []
        self.values: list[int] = []
        self.guards: list[tuple[Any, str, Any]] = []
        self._guard_keys: set[Any] = set()
        self._atoms: dict[Any, int] = {}
        self.summed: set[int] = set()
        self.shifted: dict[tuple[int, ...], Poly] = {}  # monomial -> its expansion at 1 + y

    def var(self, name: str, value: int) -> Sym:
        """A size variable (an integer >= 1) worth ``value`` at the traced point."""
        if value < 1:
            raise NotTraceable(f"size {name}={value} is not >= 1")
        i = len(self.names)
        self.names.append(name)
        self.defs.append(None)
        self.domain.append("size")
        self.values.append(value)
        return Sym(value, {(i,): 1})

    def atom(self, kind: Any, args: tuple[Any, ...], value: int, domain: str) -> Any:
        """The variable defined by ``kind(args)`` (an existing one when defined before); an
        atom of a summed variable is summed too."""
        key = (kind, tuple(_key(a) for a in args))
        i = self._atoms.get(key)
        if i is None:
            i = len(self.names)
            self._atoms[key] = i
            self.names.append(f"a{i}")
            self.defs.append((kind, args))
            self.domain.append(domain)
            self.values.append(value)
            if self.summed and set().union(*(_variables(a) for a in args)) & self.summed:
                self.summed.add(i)
        return Sym(value, {(i,): 1})

    def guard(self, lhs: Any, op: str, rhs: Any) -> None:
        """Record that ``lhs op rhs`` holds (it held at the traced point)."""
        for x in (lhs, rhs):
            if self.summed and _variables(x) & self.summed:
                raise NotTraceable("a decision on a summed variable")
        key = (_key(lhs), op, _key(rhs))
        if key not in self._guard_keys:
            self._guard_keys.add(key)
            self.guards.append((lhs, op, rhs))


_TRACER: Tracer | None = None


def current() -> Tracer:
    if _TRACER is None:
        raise NotTraceable("a symbolic size outside a trace")
    return _TRACER


class tracing:  # noqa: N801 (a context manager, used as ``with tracing() as t``)
    """``with tracing() as tracer``: the tracer symbolic sizes record into."""

    def __enter__(self) -> Tracer:
        global _TRACER
        self.outer, _TRACER = _TRACER, Tracer()
        return _TRACER

    def __exit__(self, *exc: object) -> None:
        global _TRACER
        _TRACER = self.outer


def _key(x: Any) -> Any:
    """A hashable identity of an expression (int, Sym, Max or a tuple of them)."""
    if type(x) is Sym:
        return ("s", tuple(sorted(x.p.items())))
    if type(x) is Max:
        return ("m", tuple(sorted(_key(c) for c in x.cands)))
    if type(x) is Choice:
        return ("c", _key(x.values), x.labels)
    if isinstance(x, tuple):
        return tuple(_key(a) for a in x)
    return x


def _variables(x: Any) -> set[int]:
    if type(x) is Sym:
        return {i for m in x.p for i in m}
    if type(x) is Max:
        return set().union(*(_variables(c) for c in x.cands))
    if type(x) is Choice:
        return set().union(*(_variables(c) for c in x.values))
    return set()


# ---- proving a sign for every point --------------------------------------------------------
def _shifted(p: Poly, tracer: Tracer) -> Poly | None:
    """p with every size variable x written 1 + y (y >= 0); None when p has a variable of
    unknown sign."""
    out: Poly = {}
    cache = tracer.shifted
    domain = tracer.domain
    for m, c in p.items():
        one = cache.get(m)
        if one is None:
            one = {(): 1}
            for i in m:
                d = domain[i]
                if d == "any":
                    return None
                one = _add(one, _mul(one, {(i,): 1})) if d == "size" else _mul(one, {(i,): 1})
            cache[m] = one
        for mm, cc in one.items():
            v = out.get(mm, 0) + c * cc
            if v:
                out[mm] = v
            else:
                out.pop(mm, None)
    return out


def sign_at_least(p: Poly) -> int | None:
    """A lower bound of p over every point (sizes >= 1, atoms in their domain) when the bound
    is its value at all-ones, else None."""
    if not p:
        return 0
    tracer = current()
    if all(c >= 0 for c in p.values()):  # every variable >= 0: p >= its value at all-ones
        domain = tracer.domain
        if all(domain[i] != "any" for m in p for i in m):
            return sum(c for m, c in p.items() if all(domain[i] == "size" for i in m))
    shifted = _shifted(p, tracer)
    if shifted is None:
        return None
    if any(c < 0 for m, c in shifted.items() if m):
        return None
    return shifted.get((), 0)


def _decide(d: Poly, op: str) -> bool | None:
    """``d op 0`` for every point, if that is provable: True / False; None when not."""
    low = sign_at_least(d)
    high = sign_at_least(_scale(d, -1))  # -d >= high, so d <= -high
    if op == "gt":
        return (
            True
            if low is not None and low > 0
            else False
            if high is not None and high >= 0
            else None
        )
    if op == "ge":
        return (
            True
            if low is not None and low >= 0
            else False
            if high is not None and high > 0
            else None
        )
    if op == "eq":
        return False if (low is not None and low > 0) or (high is not None and high > 0) else None
    if op == "ne":
        return True if (low is not None and low > 0) or (high is not None and high > 0) else None
    raise ValueError(op)


def provably_ge(a: Any, b: Any) -> bool:
    """a >= b at every point (both ints or Syms)."""
    d = _poly(a) if type(b) is int and b == 0 else _add(_poly(a), _poly(b), -1)
    if all(c <= 0 for c in d.values()):  # d <= 0 wherever its variables are >= 0
        return not d
    if _negative_somewhere(d):
        return False
    low = sign_at_least(d)
    return low is not None and low >= 0


_PROBE = 1 << 20  # a large size


def _negative_somewhere(d: Poly) -> bool:
    """Whether d < 0 at one of a few points of the size domain (all sizes 1; all large; one
    large, the others 1): a cheap disproof before the sign proof. False when d has atoms."""
    sizes = sorted({i for m in d for i in m})
    domain = current().domain
    if any(domain[i] != "size" for i in sizes):
        return False
    probes = [dict.fromkeys(sizes, 1), dict.fromkeys(sizes, _PROBE)]
    probes += [{**probes[0], i: _PROBE} for i in sizes] if len(sizes) > 1 else []
    for at in probes:
        total = 0
        for m, c in d.items():
            for i in m:
                c *= at[i]
            total += c
        if total < 0:
            return True
    return False


def _poly(x: Any) -> Poly:
    return x.p if type(x) is Sym else _const(x)


def _mk(value: int, p: Poly) -> Any:
    """A Sym, or the plain int when the polynomial is a constant."""
    if not p:
        return 0
    if len(p) == 1 and () in p:
        return p[()]
    return Sym(value, p)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


def compare(a: Any, op: str, b: Any) -> bool:
    """``a op b`` at the traced point; a guard unless it is decided for every point."""
    result = _OPS[op](value(a), value(b))
    if type(a) is not Max and type(b) is not Max:
        d = _add(_poly(a), _poly(b), -1)  # a - b
        rel = {"<": ("gt", True), "<=": ("ge", True), ">": ("gt", False), ">=": ("ge", False),
               "==": ("eq", False), "!=": ("ne", False)}[op]  # fmt: skip
        kind, flip = rel
        proven = _decide(_scale(d, -1) if flip else d, kind)
        if proven is not None:
            if proven != result:  # the proof and the point disagree: a bug, not input
                raise NotTraceable(f"sign proof of {a!r} {op} {b!r} contradicts the point")
            return result
    current().guard(a, op if result else _NEGATE[op], b)
    return result


def value(x: Any) -> int:
    return x.v if type(x) in (Sym, Max) else x


# ---- Sym ----------------------------------------------------------------------------------
class Sym:
    """A size-dependent integer: its value at the traced point and its polynomial."""

    __slots__ = ("v", "p", "probes")

    def __init__(self, v: int, p: Poly) -> None:
        self.v, self.p = v, p
        self.probes: tuple[int, ...] | None = None  # values at _probe_points, when computed

    def __repr__(self) -> str:
        return f"Sym({self.v}, {self.p})"

    # arithmetic
    def __add__(self, o: Any) -> Any:
        t = type(o)
        if t is int:
            return self if o == 0 else _mk(self.v + o, _add(self.p, {(): o}))
        if t is Sym:
            return _mk(self.v + o.v, _add(self.p, o.p))
        if t is Max:
            return o + self
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, o: Any) -> Any:
        t = type(o)
        if t is int:
            return self if o == 0 else _mk(self.v - o, _add(self.p, {(): -o}))
        if t is Sym:
            return _mk(self.v - o.v, _add(self.p, o.p, -1))
        return NotImplemented

    def __rsub__(self, o: Any) -> Any:
        if type(o) is int:
            return _mk(o - self.v, _add({(): o} if o else {}, self.p, -1))
        return NotImplemented

    def __neg__(self) -> Any:
        return _mk(-self.v, _scale(self.p, -1))

    def __pos__(self) -> Sym:
        return self

    def __mul__(self, o: Any) -> Any:
        t = type(o)
        if t is int:
            return _mk(self.v * o, _scale(self.p, o))
        if t is Sym:
            return _mk(self.v * o.v, _mul(self.p, o.p))
        if t is Max:
            return o * self
        if t is bool:
            return self * int(o)
        return NotImplemented

    __rmul__ = __mul__

    def __pow__(self, k: int) -> Any:
        if type(k) is not int or k < 0:
            return NotImplemented
        out: Any = 1
        for _ in range(k):
            out = out * self
        return out

    def __floordiv__(self, o: Any) -> Any:
        if type(o) is Sym:
            return _divide("floordiv", self, o)
        if type(o) is not int or o <= 0:
            return NotImplemented
        if o == 1:
            return self
        if all(c % o == 0 for c in self.p.values()):
            return _mk(self.v // o, {m: c // o for m, c in self.p.items()})
        return _divide("floordiv", self, o)

    def __rfloordiv__(self, o: Any) -> Any:
        if type(o) is int:
            return _divide("floordiv", o, self)
        return NotImplemented

    def __mod__(self, o: Any) -> Any:
        if type(o) is not int or o <= 0:
            return NotImplemented
        if o == 1:
            return 0
        if all(c % o == 0 for c in self.p.values()):
            return 0
        return _divide("mod", self, o)

    # decisions
    def __lt__(self, o: Any) -> bool:
        return compare(self, "<", o)

    def __le__(self, o: Any) -> bool:
        return compare(self, "<=", o)

    def __gt__(self, o: Any) -> bool:
        return compare(self, ">", o)

    def __ge__(self, o: Any) -> bool:
        return compare(self, ">=", o)

    def __eq__(self, o: object) -> bool:  # type: ignore[override]
        if type(o) not in (int, Sym, Max):
            return False
        return compare(self, "==", o)

    def __ne__(self, o: object) -> bool:  # type: ignore[override]
        if type(o) not in (int, Sym, Max):
            return True
        return compare(self, "!=", o)

    def __bool__(self) -> bool:
        return compare(self, "!=", 0)

    # escapes: a plain value of a size specialises the trace to it, or is refused
    def __index__(self) -> int:
        compare(self, "==", self.v)
        return self.v

    __int__ = __index__

    def __format__(self, spec: str) -> str:
        return format(self.__index__(), spec)

    def __str__(self) -> str:
        return str(self.__index__())

    def __float__(self) -> float:
        raise NotTraceable("float() of a size")

    __hash__ = None  # type: ignore[assignment]


def _divide(kind: str, a: Any, b: Any) -> Any:
    """An atom for a // b or a % b with no polynomial form; -(-x // c) is a ceiling."""
    va, vb = value(a), value(b)
    val = va // vb if kind == "floordiv" else va % vb
    if kind == "floordiv" and type(a) is Sym and type(b) is int:
        low_neg = sign_at_least(_scale(a.p, -1))
        if low_neg is not None:  # a <= 0 everywhere: a // c = -ceil(-a / c), an atom >= 0
            ceil = current().atom("ceildiv", (-a, b), -(va // vb), "nonneg")
            return -ceil
    nonneg = all(sign_at_least(_poly(x)) is not None for x in (a, b) if type(x) is Sym)
    nonneg = nonneg and all(x >= 0 for x in (a, b) if type(x) is int)
    nonneg = nonneg or (kind == "mod" and type(b) is int and b > 0)  # Python's % of c > 0
    return current().atom(kind, (a, b), val, "nonneg" if nonneg else "any")


# ---- Max ----------------------------------------------------------------------------------
class Max:
    """max(cands): its value at the traced point and the candidates (ints, Syms) that no
    other candidate provably exceeds."""

    __slots__ = ("v", "cands")

    def __init__(self, v: int, cands: tuple[Any, ...]) -> None:
        self.v, self.cands = v, cands

    def __repr__(self) -> str:
        return f"Max({self.v}, {self.cands})"

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

    def __lt__(self, o: Any) -> bool:
        return compare(self, "<", o)

    def __le__(self, o: Any) -> bool:
        return compare(self, "<=", o)

    def __gt__(self, o: Any) -> bool:
        return compare(self, ">", o)

    def __ge__(self, o: Any) -> bool:
        return compare(self, ">=", o)

    def __eq__(self, o: object) -> bool:  # type: ignore[override]
        return type(o) in (int, Sym, Max) and compare(self, "==", o)

    def __ne__(self, o: object) -> bool:  # type: ignore[override]
        return type(o) not in (int, Sym, Max) or compare(self, "!=", o)

    def __bool__(self) -> bool:
        return compare(self, "!=", 0)

    def __index__(self) -> int:
        raise NotTraceable("int() of a maximum")

    __hash__ = None  # type: ignore[assignment]


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


class Choice:
    """The label of the largest of ``values`` (the first on ties), chosen at each point: a
    peak's phase. Comparing it with a label records a guard."""

    __slots__ = ("v", "values", "labels")

    def __init__(self, v: str, values: tuple[Any, ...], labels: tuple[str, ...]) -> None:
        self.v, self.values, self.labels = v, values, labels

    def __repr__(self) -> str:
        return f"Choice({self.v!r})"

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


# ---- sums over decode steps ---------------------------------------------------------------
class Steps:
    """The per-step value of a closed-form step sum, a + b t + c pairs(prompt + t) for
    t = 1..n, as expressions of the sizes (estimator/compiled.py makes a StepSeries of it at
    each point). ``pairs``: (name of the estimator/sums.py sum, its leading constants), and
    the per-position function is that sum's summand."""

    __slots__ = ("a", "b", "c", "prompt", "n", "pairs")

    def __init__(self, a: Any, b: Any, c: Any, prompt: Any, n: Any, pairs: tuple[Any, ...]):
        self.a, self.b, self.c, self.prompt, self.n, self.pairs = a, b, c, prompt, n, pairs


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
    return sums, Steps(total[0], total[1], total[2], prompt, n, pairs)


def _call_value(fn: str, consts: tuple[Any, ...], lo: int, hi: int) -> int:
    from estimator import sums

    return getattr(sums, fn)(*consts, lo, hi)
