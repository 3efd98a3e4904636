"""The estimate compiled once per structure, then evaluated per point.

What an estimate does depends on its structure (the spec and every workload field but the
sizes: mode, precision, attention, checkpointing, optimizer, ...), and each number it returns
is a polynomial in the sizes b, s, target_len, prompt_len and new_tokens, within the region
where the code's decisions on sizes come out the same. ``program(spec, workload, build)``
runs ``build`` (e.g. estimator.estimate.raw_estimate) once with symbolic sizes
(estimator/symbolic.py), records those decisions as guards, and writes one Python function
that checks the guards and computes every output at a point; a point outside every trace so
far is traced anew (up to ``MAX_TRACES`` per structure; beyond that, or when a structure cannot
be traced, the caller runs ``build`` directly). Decode's N steps are summed in closed form
(estimator/sums.py) and their per-step values come as a lazy StepSeries, so the cost does not
depend on N.

Every output equals the direct computation at every point whose guards hold: the trace runs
the same code and takes the same branches (tests/estimator/test_compiled.py compares both on
random grids).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from estimator.shapes import Shapes, attention_pairs, cached_positions, resolve
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload
from estimator.sym import StepSeries
from estimator.symbolic import Choice, Max, NotTraceable, Steps, Sym, Tracer, _key, tracing

#: the Workload fields that are sizes: the variables of a program (the others are structure)
SIZES = ("batch_size", "seq_len", "target_len", "prompt_len", "new_tokens")
#: the keyword of each size in estimator.shapes.resolve
_RESOLVE = {"batch_size": "b", "seq_len": "s", "target_len": "target_len",
            "prompt_len": "prompt_len", "new_tokens": "new_tokens"}  # fmt: skip
MAX_TRACES = 16
#: direct computation of a structure's points after which a miss is traced (about what a
#: trace costs: 5-30 ms): the total never exceeds about twice what direct calls would take
TRACE_AFTER_S = 0.02
MAX_PROGRAMS = 512
Build = Callable[[ModelSpec, Shapes], Any]


def structure(workload: Workload) -> tuple[Any, ...]:
    """The workload without its sizes (and which optional sizes are given): what a program of
    it depends on."""
    d = workload.__dict__
    return tuple(v for k, v in d.items() if k not in SIZES) + (
        d["target_len"] is None,
        d["prompt_len"] is None,
    )


def variables(workload: Workload) -> tuple[str, ...]:
    """The sizes of ``workload`` that are variables (the optional ones only when given)."""
    d = workload.__dict__
    return tuple(k for k in SIZES if d[k] is not None)


# ---- one trace: guards, atoms and outputs as Python source ---------------------------------
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
            key = _key(x)
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
        return _StepsSlot(first, out.pairs)
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
    __slots__ = ("first", "per_position")

    def __init__(self, first: int, pairs: tuple[Any, ...]) -> None:
        self.first = first
        self.per_position = _summand(pairs)


def _summand(pairs: tuple[Any, ...]) -> Callable[[int], int]:
    """The per-position function whose sum estimator/sums.py's ``pairs[0]`` is."""
    if pairs[0] == "sum_cached_positions":
        return functools.partial(cached_positions, pairs[1], pairs[2])
    pattern, window, causal, convention = pairs[1:]
    return lambda s: attention_pairs(pattern, window, causal, s, convention)


def _fill(skeleton: Any, values: Sequence[Any]) -> Any:
    t = type(skeleton)
    if t is _Slot:
        return values[skeleton.i]
    if t is _StepsSlot:
        a, b, c, prompt, n = values[skeleton.first : skeleton.first + 5]
        return StepSeries(a, b, c, prompt, n, skeleton.per_position)
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
        values = self.fn(*sizes)
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


# ---- programs: the traces of one structure -------------------------------------------------
class Program:
    """The traces of one (build, spec, structure); ``None`` from ``evaluate`` when neither a
    trace nor a new one covers the point (the caller computes it directly)."""

    def __init__(self, build: Build, spec: ModelSpec, names: tuple[str, ...]) -> None:
        self.build, self.spec, self.names = build, spec, names
        self.traces: list[Trace] = []
        self.traceable = True
        self.direct_s = 0.0  # time spent computing this structure's points directly

    def evaluate(self, workload: Workload, eager: bool = False) -> Any:
        """The outputs at ``workload``'s sizes, or None (the caller computes the point
        directly and adds the time to ``direct_s``). A point no trace covers is traced once
        ``TRACE_AFTER_S`` went into direct computations of the structure (``eager``: at
        once): a trace costs about that much, so a structure asked for a few times stays as
        cheap as before and one asked for often (a search, a long decode) compiles."""
        d = workload.__dict__
        sizes = [d[k] for k in self.names]
        for tr in self.traces:
            out = tr(*sizes)
            if out is not None:
                return out
        if not self.traceable or len(self.traces) >= MAX_TRACES:
            return None
        if self.direct_s < TRACE_AFTER_S and not eager:
            return None
        try:
            tr = trace(self.build, self.spec, workload, self.names)
        except NotTraceable:
            self.traceable = False
            return None
        self.traces.append(tr)
        return tr(*sizes)

    def many(
        self, columns: list[Any], make: Callable[[int], Workload]
    ) -> tuple[list[Any], Any] | None:
        """The outputs at many points at once: ``columns`` int64 arrays of the sizes (in the
        order of ``self.names``), ``make(i)`` the workload of point i (to trace a point no
        trace covers). -> (one array or constant per output, where each output came from a
        trace: a bool array), or None without an array form (numpy or int64 too small)."""
        import numpy as np

        n = len(columns[0]) if columns else 0
        highs = [int(c.max()) for c in columns]
        left = np.ones(n, dtype=bool)
        outs: list[Any] | None = None
        tried = 0
        while left.any():
            for tr in self.traces[tried:]:
                fn = tr.vector()
                if fn is None or not tr.bounded(highs):
                    return None
                ok, values = fn(*columns)
                take = left & ok
                if outs is None:
                    outs = [np.empty(n, dtype=object) for _ in values]
                for col, v in zip(outs, values, strict=True):
                    if isinstance(v, np.ndarray):
                        col[take] = v[take].astype(object)
                    else:
                        col[take] = v
                left &= ~take
            tried = len(self.traces)
            if left.any():  # a point outside every trace: trace it
                first = int(np.argmax(left))
                if self.evaluate(make(first), eager=True) is None:
                    return None
        return outs or [], left

    def at(self, sizes: Sequence[int], make: Callable[[], Workload]) -> Any:
        """The outputs at ``sizes`` (in the order of ``self.names``); a point no trace covers
        is traced at once (``make()`` builds its workload), None when it cannot be."""
        traces = self.traces
        for k, tr in enumerate(traces):
            out = tr(*sizes)
            if out is not None:
                if k:  # the last trace that covered a point first: grids move in regions
                    traces.insert(0, traces.pop(k))
                return out
        return self.evaluate(make(), eager=True)


def trace(build: Build, spec: ModelSpec, workload: Workload, names: tuple[str, ...]) -> Trace:
    """Run ``build`` with the sizes of ``workload`` made symbols; its program at that point."""
    d = workload.__dict__
    with tracing() as tracer:
        sym = {_RESOLVE[k]: tracer.var(k, d[k]) for k in names}
        out = build(spec, resolve(spec, workload, **sym))
        return Trace(tracer, out, len(names))


_PROGRAMS: dict[Any, Program] = {}


def program(build: Build, spec: ModelSpec, workload: Workload) -> Program:
    """The program of ``build`` for the structure of ``workload`` on ``spec`` (cached)."""
    key = (build, spec, structure(workload))
    prog = _PROGRAMS.get(key)
    if prog is None:
        if len(_PROGRAMS) >= MAX_PROGRAMS:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        prog = _PROGRAMS[key] = Program(build, spec, variables(workload))
    return prog


def evaluate(build: Build, spec: ModelSpec, workload: Workload) -> Any:
    """``build(spec, resolve(spec, workload))`` from the structure's program, or directly."""
    prog = program(build, spec, workload)
    out = prog.evaluate(workload)
    if out is None:
        start = time.perf_counter()
        out = build(spec, resolve(spec, workload))
        prog.direct_s += time.perf_counter() - start
    return out


__all__ = ["Program", "Trace", "evaluate", "program", "structure", "trace", "variables"]
