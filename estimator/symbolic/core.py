"""The tracer and the symbolic integer ``Sym``, the comparisons that record guards, and the
sign proofs that spare them (see estimator/symbolic/__init__.py)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from estimator.symbolic.poly import Poly, add, const, mul, scale


class NotTraceable(Exception):
    """The code did something with a size that a trace cannot keep general."""


class Expr:
    """A symbolic value: ``v`` at the traced point; ``key()`` a hashable identity of the
    expression, ``variables()`` the variables it reads (Sym, and estimator/symbolic/maxima.py's
    Max and Choice)."""

    __slots__ = ()
    v: Any

    def key(self) -> Any:
        raise NotImplementedError

    def variables(self) -> set[int]:
        raise NotImplementedError

    # decisions: each records a guard unless it holds at every point (``compare``)
    def __lt__(self, o: Any) -> bool:
        return compare(self, "<", o)

    def __le__(self, o: Any) -> bool:
        return compare(self, "<=", o)

    def __gt__(self, o: Any) -> bool:
        return compare(self, ">", o)

    def __ge__(self, o: Any) -> bool:
        return compare(self, ">=", o)

    def __eq__(self, o: object) -> bool:  # type: ignore[override]
        return isinstance(o, int | Expr) and compare(self, "==", o)

    def __ne__(self, o: object) -> bool:  # type: ignore[override]
        return not isinstance(o, int | Expr) or compare(self, "!=", o)

    def __bool__(self) -> bool:
        return compare(self, "!=", 0)

    __hash__ = None  # type: ignore[assignment]


def expr_key(x: Any) -> Any:
    """A hashable identity of an expression (an int, an Expr or a tuple of them)."""
    if isinstance(x, Expr):
        return x.key()
    if isinstance(x, tuple):
        return tuple(expr_key(a) for a in x)
    return x


def variables_of(x: Any) -> set[int]:
    return x.variables() if isinstance(x, Expr) else set()


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
        key = (kind, tuple(expr_key(a) for a in args))
        i = self._atoms.get(key)
        if i is None:
            i = len(self.names)
            self._atoms[key] = i
            self.names.append(f"a{i}")
            self.defs.append((kind, args))
            self.domain.append(domain)
            self.values.append(value)
            if self.summed and set().union(*(variables_of(a) for a in args)) & self.summed:
                self.summed.add(i)
        return Sym(value, {(i,): 1})

    def guard(self, lhs: Any, op: str, rhs: Any) -> None:
        """Record that ``lhs op rhs`` holds (it held at the traced point)."""
        for x in (lhs, rhs):
            if self.summed and variables_of(x) & self.summed:
                raise NotTraceable("a decision on a summed variable")
        key = (expr_key(lhs), op, expr_key(rhs))
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
                one = add(one, mul(one, {(i,): 1})) if d == "size" else mul(one, {(i,): 1})
            cache[m] = one
        out = add(out, one, c)
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
    high = sign_at_least(scale(d, -1))  # -d >= high, so d <= -high
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
    d = _poly(a) if type(b) is int and b == 0 else add(_poly(a), _poly(b), -1)
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
    return x.p if type(x) is Sym else const(x)


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
    if type(a) in (int, Sym) and type(b) in (int, Sym):
        d = add(_poly(a), _poly(b), -1)  # a - b
        rel = {"<": ("gt", True), "<=": ("ge", True), ">": ("gt", False), ">=": ("ge", False),
               "==": ("eq", False), "!=": ("ne", False)}[op]  # fmt: skip
        kind, flip = rel
        proven = _decide(scale(d, -1) if flip else d, kind)
        if proven is not None:
            if proven != result:  # the proof and the point disagree: a bug, not input
                raise NotTraceable(f"sign proof of {a!r} {op} {b!r} contradicts the point")
            return result
    current().guard(a, op if result else _NEGATE[op], b)
    return result


def value(x: Any) -> int:
    return x.v if isinstance(x, Expr) else x


class Sym(Expr):
    """A size-dependent integer: its value at the traced point and its polynomial."""

    __slots__ = ("v", "p", "probes")

    def __init__(self, v: int, p: Poly) -> None:
        self.v, self.p = v, p
        self.probes: tuple[int, ...] | None = None  # values at _probe_points, when computed

    def __repr__(self) -> str:
        return f"Sym({self.v}, {self.p})"

    def key(self) -> Any:
        return ("s", tuple(sorted(self.p.items())))

    def variables(self) -> set[int]:
        return {i for m in self.p for i in m}

    # arithmetic
    def __add__(self, o: Any) -> Any:
        t = type(o)
        if t is int:
            return self if o == 0 else _mk(self.v + o, add(self.p, {(): o}))
        if t is Sym:
            return _mk(self.v + o.v, add(self.p, o.p))
        return NotImplemented  # a Max: its __radd__

    __radd__ = __add__

    def __sub__(self, o: Any) -> Any:
        t = type(o)
        if t is int:
            return self if o == 0 else _mk(self.v - o, add(self.p, {(): -o}))
        if t is Sym:
            return _mk(self.v - o.v, add(self.p, o.p, -1))
        return NotImplemented

    def __rsub__(self, o: Any) -> Any:
        if type(o) is int:
            return _mk(o - self.v, add({(): o} if o else {}, self.p, -1))
        return NotImplemented

    def __neg__(self) -> Any:
        return _mk(-self.v, scale(self.p, -1))

    def __pos__(self) -> Sym:
        return self

    def __mul__(self, o: Any) -> Any:
        t = type(o)
        if t is int:
            return _mk(self.v * o, scale(self.p, o))
        if t is Sym:
            return _mk(self.v * o.v, mul(self.p, o.p))
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


def _divide(kind: str, a: Any, b: Any) -> Any:
    """An atom for a // b or a % b with no polynomial form; -(-x // c) is a ceiling."""
    va, vb = value(a), value(b)
    val = va // vb if kind == "floordiv" else va % vb
    if kind == "floordiv" and type(a) is Sym and type(b) is int:
        low_neg = sign_at_least(scale(a.p, -1))
        if low_neg is not None:  # a <= 0 everywhere: a // c = -ceil(-a / c), an atom >= 0
            ceil = current().atom("ceildiv", (-a, b), -(va // vb), "nonneg")
            return -ceil
    nonneg = all(sign_at_least(_poly(x)) is not None for x in (a, b) if type(x) is Sym)
    nonneg = nonneg and all(x >= 0 for x in (a, b) if type(x) is int)
    nonneg = nonneg or (kind == "mod" and type(b) is int and b > 0)  # Python's % of c > 0
    return current().atom(kind, (a, b), val, "nonneg" if nonneg else "any")
