"""Programs: the traces of one (build, spec, structure), taken when a point falls outside
them, and the cache of programs. See estimator/compiled/__init__.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from estimator.compiled.source import Trace
from estimator.shapes import Shapes, resolve
from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import SIZE_FIELDS, Workload
from estimator.symbolic import NotTraceable, tracing

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
    return tuple(v for k, v in d.items() if k not in SIZE_FIELDS) + (
        d["target_len"] is None,
        d["prompt_len"] is None,
    )


def variables(workload: Workload) -> tuple[str, ...]:
    """The sizes of ``workload`` that are variables (the optional ones only when given)."""
    d = workload.__dict__
    return tuple(k for k in SIZE_FIELDS if d[k] is not None)


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
        except (SpecError, ArithmeticError):  # the point itself fails: directly, it says why
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
