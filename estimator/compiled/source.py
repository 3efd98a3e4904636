"""One trace written as Python: its atoms, monomials and maxima once each, its guards, its
outputs; a scalar function per point and, for grids, a numpy function over arrays of points
(used when a bound on every value stays within int64). See estimator/compiled/__init__.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from estimator.sym import StepSeries
from estimator.symbolic import Choice, Max, NotTraceable, Steps, Sym, Tracer, expr_key


class _Source:
    """Python source of a trace's function: each atom, monomial and output written once, each
    after what it uses (``lines``)."""

    def __init__(self, tracer: Tracer, n_args: int, vector: bool = False) -> None:
        self.tr = tracer
        self.lines: list[str] = []
        self.monomials: dict[tuple[int, ...], str] = {}
        self.n_args = n_args
        self.atoms: set[int] = set()
        self.maxima: dict[Any, str] = {}
        self.vector = vector  # numpy arrays of points: MAX / MIN elementwise

    def var(self, i: int) -> str:
        if i >= self.n_args and i not in self.atoms:  # an atom: its definition first
            self.atoms.add(i)
            self.lines.append(f"v{i} = {self.atom(i)}")
        return f"v{i}"

    def mono(self, m: tuple[int, ...]) -> str:
        if len(m) == 1:
            return self.var(m[0])
        name = self.monomials.get(m)
        if name is None:
            head = self.mono(m[:-1])
            name = f"m{len(self.monomials)}"
            self.monomials[m] = name
            self.lines.append(f"{name} = {head} * {self.var(m[-1])}")
        return name

    def poly(self, p: dict[tuple[int, ...], int]) -> str:
        if not p:
            return "0"
        parts = []
        for m, c in sorted(p.items()):
            if not m:
                parts.append(str(c))
            elif c == 1:
                parts.append(self.mono(m))
            elif c == -1:
                parts.append(f"-{self.mono(m)}")
            else:
                parts.append(f"{c} * {self.mono(m)}")
        return " + ".join(parts).replace("+ -", "- ")

    def expr(self, x: Any) -> str:
        if type(x) is Sym:
            return f"({self.poly(x.p)})"
        if type(x) is Max:  # written once: guards and outputs often share a maximum
            key = expr_key(x)
            name = self.maxima.get(key)
            if name is None:
                cands = ", ".join(self.expr(c) for c in x.cands)
                name = self.maxima[key] = f"x{len(self.maxima)}"
                self.lines.append(f"{name} = {'MAX' if self.vector else 'max'}({cands})")
            return name
        if type(x) is Choice:  # the label of the first largest value, at each point
            values = ", ".join(self.expr(v) for v in x.values)
            return f"{'VPICK' if self.vector else 'PICK'}(({values},), {x.labels!r})"
        if isinstance(x, bool | int | str) or x is None:
            return repr(x)
        raise NotTraceable(f"cannot write {x!r} as source")

    def atom(self, i: int) -> str:
        kind, args = self.tr.defs[i]  # type: ignore[misc]
        a = [self.expr(x) for x in args]
        if kind == "floordiv":
            return f"{a[0]} // {a[1]}"
        if kind == "ceildiv":
            return f"-(-{a[0]} // {a[1]})"
        if kind == "mod":
            return f"{a[0]} % {a[1]}"
        if kind == "min":
            return f"{'MIN' if self.vector else 'min'}({', '.join(a)})"
        if isinstance(kind, tuple) and kind[0] == "call":
            if self.vector:
                raise NotTraceable("a closed-form sum over arrays")
            return f"{kind[1]}({', '.join(a)})"
        raise NotTraceable(f"atom {kind!r}")


def _is_leaf(x: Any) -> bool:
    return type(x) in (Sym, Max, Choice, int, str, bool) or x is None


def _pick(values: tuple[int, ...], labels: tuple[str, ...]) -> str:
    """The label of the first largest value (``max(pairs, key=value)``)."""
    return labels[max(range(len(values)), key=values.__getitem__)]


def _vpick(values: tuple[Any, ...], labels: tuple[str, ...]) -> Any:
    """``_pick`` over arrays of points: an object array of labels."""
    import numpy as np

    n = max((len(v) for v in values if isinstance(v, np.ndarray)), default=1)
    stacked = np.stack([np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)) for v in values])
    return np.array(labels, dtype=object)[np.argmax(stacked, axis=0)]


def _leaves(out: Any, found: list[Any]) -> Any:
    """The output with each Sym / Max / Steps replaced by its slot in ``found``."""
    if type(out) in (Sym, Max, Choice):
        found.append(out)
        return _Slot(len(found) - 1)
    if type(out) is Steps:
        first = len(found)
        found.extend((out.a, out.b, out.c, out.prompt, out.n))
        return _StepsSlot(first, out.pairs_at)
    if isinstance(out, dict):
        return {k: _leaves(v, found) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return type(out)(_leaves(v, found) for v in out)
    return out


class _Slot:
    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class _StepsSlot:
    __slots__ = ("first", "pairs_at")

    def __init__(self, first: int, pairs_at: Callable[[int], int]) -> None:
        self.first, self.pairs_at = first, pairs_at


def _fill(skeleton: Any, values: Sequence[Any]) -> Any:
    t = type(skeleton)
    if t is _Slot:
        return values[skeleton.i]
    if t is _StepsSlot:
        a, b, c, prompt, n = values[skeleton.first : skeleton.first + 5]
        return StepSeries(a, b, c, prompt, n, skeleton.pairs_at)
    if t is dict:
        return {k: _fill(v, values) for k, v in skeleton.items()}
    if t is list or t is tuple:
        return t(_fill(v, values) for v in skeleton)
    return skeleton


class Trace:
    """One trace: ``fn(*sizes)`` -> the outputs' values, or None outside its guards."""

    def __init__(self, tracer: Tracer, out: Any, n_args: int) -> None:
        found: list[Any] = []
        src = _Source(tracer, n_args)
        guards = [f"{src.expr(lhs)} {op} {src.expr(rhs)}" for lhs, op, rhs in tracer.guards]
        if isinstance(out, tuple) and all(_is_leaf(x) for x in out):  # flat: values as is
            self.skeleton = None
            found = list(out)
        else:
            self.skeleton = _leaves(out, found)
        outputs = [src.expr(x) for x in found]
        self.tracer, self.leaves, self.n_args = tracer, found, n_args
        self._vector: Any = None
        text = [f"def trace({', '.join(f'v{i}' for i in range(n_args))}):"]
        text += [f"    {line}" for line in src.lines]
        if guards:
            text.append(f"    if not ({' and '.join(guards)}):")
            text.append("        return None")
        text.append(f"    return ({', '.join(outputs)}{',' if len(outputs) == 1 else ''})")
        self.source = "\n".join(text)
        from estimator import sums

        namespace: dict[str, Any] = {
            "sum_cached_positions": sums.sum_cached_positions,
            "sum_attention_pairs": sums.sum_attention_pairs,
            "PICK": _pick,
        }
        exec(compile(self.source, "<estimator.compiled>", "exec"), namespace)  # noqa: S102
        self.fn: Callable[..., tuple[Any, ...] | None] = namespace["trace"]

    def __call__(self, *sizes: int) -> Any:
        try:
            values = self.fn(*sizes)
        except ArithmeticError:  # an atom undefined at this point (outside the guards)
            return None
        if values is None or self.skeleton is None:
            return values
        return _fill(self.skeleton, values)

    # ---- many points at once (numpy) ------------------------------------------------------
    def vector(self) -> Callable[..., tuple[Any, list[Any]]] | None:
        """``f(*columns)`` -> (where the guards hold, the outputs there) over int64 arrays of
        points; None when this trace has no array form (a closed-form sum)."""
        if self._vector is None:
            try:
                self._vector = self._vector_fn()
            except NotTraceable:
                self._vector = False
        return self._vector or None

    def _vector_fn(self) -> Callable[..., tuple[Any, list[Any]]]:
        import numpy as np

        src = _Source(self.tracer, self.n_args, vector=True)
        guards = [f"({src.expr(a)} {op} {src.expr(b)})" for a, op, b in self.tracer.guards]
        outputs = [src.expr(x) for x in self.leaves]
        text = [f"def vector({', '.join(f'v{i}' for i in range(self.n_args))}):"]
        text += [f"    {line}" for line in src.lines]
        text.append(f"    ok = {' & '.join(guards) if guards else 'True'}")
        text.append(f"    return ok, [{', '.join(outputs)}]")
        namespace: dict[str, Any] = {
            "MAX": lambda *xs: functools.reduce(np.maximum, xs),
            "MIN": lambda *xs: functools.reduce(np.minimum, xs),
            "VPICK": _vpick,
        }
        exec(compile("\n".join(text), "<estimator.compiled vector>", "exec"), namespace)  # noqa: S102
        return namespace["vector"]

    def bounded(self, highs: Sequence[int]) -> bool:
        """Whether every value this trace computes stays within int64 for sizes up to
        ``highs`` (each >= 1): |p| <= the sum of |c| times the monomial at the highs, an atom
        by its arguments' bounds."""
        tr, limit = self.tracer, 2**62
        bounds: dict[int, int] = dict(enumerate(highs))

        def bound(x: Any) -> int:
            if type(x) is Sym:
                total = 0
                for m, c in x.p.items():
                    b = abs(c)
                    for i in m:  # >= 1: every prefix of the monomial is bounded too
                        b *= max(var(i), 1)
                    total += b
                return total
            if type(x) is Max:
                return max(bound(c) for c in x.cands)
            return abs(x) if type(x) is int else 0

        def var(i: int) -> int:
            if i not in bounds:
                kind, args = tr.defs[i]  # type: ignore[misc]
                if kind == "mod":
                    bounds[i] = bound(args[1])
                elif kind in ("floordiv", "ceildiv"):
                    bounds[i] = bound(args[0]) + 1
                elif kind == "min":
                    bounds[i] = max(bound(a) for a in args)
                else:
                    bounds[i] = limit  # a closed-form sum: no array form anyway
            return bounds[i]

        exprs = [*self.leaves, *(x for g in tr.guards for x in (g[0], g[2]))]
        exprs += [v for x in exprs if type(x) is Choice for v in x.values]
        return all(bound(x) < limit for x in exprs if type(x) is not Choice)
