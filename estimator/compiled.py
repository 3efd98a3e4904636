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
from collections.abc import Callable, Sequence
from typing import Any

from estimator.shapes import Shapes, attention_pairs, cached_positions, resolve
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload
from estimator.sym import StepSeries
from estimator.symbolic import Max, NotTraceable, Steps, Sym, Tracer, _key, tracing

#: the Workload fields that are sizes: the variables of a program (the others are structure)
SIZES = ("batch_size", "seq_len", "target_len", "prompt_len", "new_tokens")
#: the keyword of each size in estimator.shapes.resolve
_RESOLVE = {"batch_size": "b", "seq_len": "s", "target_len": "target_len",
            "prompt_len": "prompt_len", "new_tokens": "new_tokens"}  # fmt: skip
MAX_TRACES = 16
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

    def __init__(self, tracer: Tracer, n_args: int) -> None:
        self.tr = tracer
        self.lines: list[str] = []
        self.monomials: dict[tuple[int, ...], str] = {}
        self.n_args = n_args
        self.atoms: set[int] = set()
        self.maxima: dict[Any, str] = {}

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
                self.lines.append(f"{name} = max({cands})")
            return name
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
            return f"min({', '.join(a)})"
        if isinstance(kind, tuple) and kind[0] == "call":
            return f"{kind[1]}({', '.join(a)})"
        raise NotTraceable(f"atom {kind!r}")


def _leaves(out: Any, found: list[Any]) -> Any:
    """The output with each Sym / Max / Steps replaced by its slot in ``found``."""
    if type(out) in (Sym, Max):
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
        self.skeleton = _leaves(out, found)
        src = _Source(tracer, n_args)
        guards = [f"{src.expr(lhs)} {op} {src.expr(rhs)}" for lhs, op, rhs in tracer.guards]
        outputs = [src.expr(x) for x in found]
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
        }
        exec(compile(self.source, "<estimator.compiled>", "exec"), namespace)  # noqa: S102
        self.fn: Callable[..., tuple[Any, ...] | None] = namespace["trace"]

    def __call__(self, *sizes: int) -> Any:
        values = self.fn(*sizes)
        return None if values is None else _fill(self.skeleton, values)


# ---- programs: the traces of one structure -------------------------------------------------
class Program:
    """The traces of one (build, spec, structure); ``None`` from ``evaluate`` when neither a
    trace nor a new one covers the point (the caller computes it directly)."""

    def __init__(self, build: Build, spec: ModelSpec, names: tuple[str, ...]) -> None:
        self.build, self.spec, self.names = build, spec, names
        self.traces: list[Trace] = []
        self.traceable = True
        self.misses = 0

    def evaluate(self, workload: Workload, eager: bool = False) -> Any:
        """The outputs at ``workload``'s sizes, or None. A point no trace covers is traced
        when the structure was missed before (``eager``: at once): a structure asked for
        once is computed directly, as cheaply as before."""
        d = workload.__dict__
        sizes = [d[k] for k in self.names]
        for tr in self.traces:
            out = tr(*sizes)
            if out is not None:
                return out
        self.misses += 1
        if not self.traceable or len(self.traces) >= MAX_TRACES:
            return None
        if self.misses < 2 and not eager:
            return None
        try:
            tr = trace(self.build, self.spec, workload, self.names)
        except NotTraceable:
            self.traceable = False
            return None
        self.traces.append(tr)
        return tr(*sizes)


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
    out = program(build, spec, workload).evaluate(workload)
    if out is None:
        return build(spec, resolve(spec, workload))
    return out


__all__ = ["Program", "Trace", "evaluate", "program", "structure", "trace", "variables"]
