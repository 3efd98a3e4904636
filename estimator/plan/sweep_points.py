"""How a sweep computes its points: the points of one structure (the same spec and every
workload field but the sizes) from that structure's compiled program (estimator/compiled/),
over numpy arrays when numpy is installed, else one by one; the first point of a structure,
and any point whose sizes the model refuses, through ``estimate`` itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from estimator.plan.grid import SIZE_FIELDS, Value
from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload

METRICS: tuple[str, ...] = (
    "n_params",
    "peak_memory_bytes",
    "peak_phase",
    "weights_bytes",
    "gradients_bytes",
    "optimizer_bytes",
    "activations_bytes",
    "kv_cache_bytes",
    "flops",
    "decode_with_cache_flops",
    "decode_without_cache_flops",
    "fits",
    "headroom_bytes",
    "error",
)


def _values(peak: Any, phase: Any, mem: dict[str, Any], kv: Any, flops: Any,
            decode: tuple[Any, Any] | None) -> tuple[Any, ...]:  # fmt: skip
    """METRICS[1:11] of one estimate: its peak and phase, its memory terms reduced, the KV
    cache and FLOP totals, and decode's totals with and without the cache."""
    return (
        peak,
        phase,
        mem.get("weights", 0),
        mem.get("gradients", 0),
        sum(v for k, v in mem.items() if k.startswith("optimizer.")),
        sum(v for k, v in mem.items() if k.startswith("activations.")),
        kv,
        flops,
        *(decode or (None, None)),
    )


def _budget(peak: int, usable: int | None) -> tuple[bool | None, int | None]:
    """(fits, headroom) of a peak against a usable budget (None, None without one)."""
    return (None, None) if usable is None else (peak <= usable, usable - peak)


def metrics(est: Any, usable: int | None) -> list[Any]:
    """The METRICS of one Estimate (fits/headroom when a usable budget is given)."""
    dec = est.decode
    totals = (dec.total_with_cache_flops, dec.total_without_cache_flops) if dec else None
    values = _values(est.peak_memory_bytes, est.peak_phase, est.memory.terms,
                     est.kv_cache.total, est.flops.total, totals)  # fmt: skip
    return [est.params.total, *values, *_budget(est.peak_memory_bytes, usable), ""]


def _metrics_raw(spec: ModelSpec, sh: Any) -> tuple[Any, ...]:
    """(refused, then METRICS[1:11]: what ``metrics`` reads of an Estimate) of the run ``sh``,
    the function estimator/compiled/ compiles for sweeps. ``refused``: the sizes break a
    limit of the model (estimator.spec.check_compatible's size checks: patch input's length,
    the context limit); that point goes through ``estimate`` for its message."""
    from estimator.estimate import raw_estimate
    from estimator.spec.workload import context_limit, context_used

    w = sh.workload
    limit = context_limit(spec, w)
    target = None if w.target_len is None else sh.s_dec
    if (spec.is_patch_input and sh.s != spec.n_positions) or (
        limit is not None and context_used(sh.mode, sh.s, target, sh.prompt, sh.new_tokens) > limit
    ):
        return (True, *[None] * 10)
    raw = raw_estimate(spec, sh)
    dec = raw["decode"]
    totals = (dec["total_with_cache_flops"], dec["total_without_cache_flops"]) if dec else None
    kv, flops = sum(raw["kv_cache"].values()), sum(raw["flops"].values())
    return (False, *_values(raw["peak"], raw["phase"], raw["memory"], kv, flops, totals))


class Group:
    """The points of one structure: its spec and workload fields but the sizes."""

    def __init__(
        self, spec: ModelSpec | SpecError, base: Workload, fields: list[str], usable: int | None
    ) -> None:
        self.spec, self.base, self.fields, self.usable = spec, base, fields, usable
        self.sizes = [(j, f) for j, f in enumerate(fields) if f in SIZE_FIELDS]
        self.program: Any = None  # the structure's program once a point of it estimated

    def _slow(self, combo: tuple[Value, ...]) -> list[Any]:
        """The point through ``estimate`` (its error as the row's when it refuses)."""
        from estimator.compiled import program
        from estimator.estimate import estimate

        try:
            if isinstance(self.spec, SpecError):
                raise self.spec
            est = estimate(self.spec, _workloads(self.base, self.fields, combo), direct=True)
        except (SpecError, ValueError) as exc:
            return [*combo, *[None] * (len(METRICS) - 1), _one_line(exc)]
        if self.program is None:  # the structure estimates: its later points compile
            self.program = program(_metrics_raw, self.spec, est.workload)
            self.n_params = est.params.total
            self.template = est.workload
        return [*combo, *metrics(est, self.usable)]

    def _sizes(self, combo: tuple[Value, ...]) -> dict[str, Any]:
        d = self.template.__dict__
        sizes = {k: d[k] for k in SIZE_FIELDS}
        for j, f in self.sizes:
            sizes[f] = combo[j]
        return sizes

    def _row(self, combo: tuple[Value, ...], values: Sequence[Any]) -> list[Any]:
        return [*combo, self.n_params, *values, *_budget(values[0], self.usable), ""]

    def fill(self, combos: list[tuple[Value, ...]], idx: list[int], rows: list[Any]) -> None:
        """rows[i] for the points ``idx`` of this structure."""
        k = 0
        while k < len(idx) and self.program is None:
            rows[idx[k]] = self._slow(combos[idx[k]])
            k += 1
        rest = idx[k:]
        if rest and not self._fill_arrays(combos, rest, rows):
            for i in rest:
                rows[i] = self._one(combos[i])

    def _one(self, combo: tuple[Value, ...]) -> list[Any]:
        """One point from the program (through ``estimate`` when refused or untraceable)."""
        sizes = self._sizes(combo)
        values = self.program.at(
            [sizes[k] for k in self.program.names],
            lambda: self.template.model_copy(update=sizes),
        )
        if values is None or values[0]:
            return self._slow(combo)
        return self._row(combo, values[1:])

    def _fill_arrays(
        self, combos: list[tuple[Value, ...]], idx: list[int], rows: list[Any]
    ) -> bool:
        """Every point of ``idx`` from the program over numpy arrays (the refused points
        through ``estimate``); False (nothing filled) without numpy, or when the program has
        no array form here."""
        try:
            import numpy as np
        except ImportError:
            return False
        d = self.template.__dict__
        varied = {f: j for j, f in self.sizes}
        columns = [
            np.fromiter((combos[i][varied[k]] for i in idx), np.int64, len(idx))
            if k in varied
            else np.full(len(idx), d[k], np.int64)
            for k in self.program.names
        ]

        def make(j: int) -> Workload:
            return self.template.model_copy(update=self._sizes(combos[idx[j]]))

        got = self.program.many(columns, make)
        if got is None:
            return False
        refused, *values = (col.tolist() for col in got[0])
        n = len(idx)
        budgets = (  # a refused point's peak is None; its row goes through estimate
            _budget(p, self.usable) if p is not None else (None, None) for p in values[0]
        )
        block = zip(
            *zip(*(combos[i] for i in idx), strict=True),
            itertools.repeat(self.n_params, n),
            *values,
            *zip(*budgets, strict=True),
            itertools.repeat("", n),
            strict=True,
        )
        for i, row, no in zip(idx, map(list, block), refused, strict=True):
            rows[i] = self._slow(combos[i]) if no else row
        return True


def _workloads(base: Workload, fields: list[str], combo: tuple[Value, ...]) -> Workload:
    update = {f: v for f, v in zip(fields, combo, strict=True) if not f.startswith("spec.")}
    if set(update).issubset(SIZE_FIELDS):
        return base.model_copy(update=update)
    return Workload.model_validate(base.model_dump(exclude_unset=True) | update)


def _one_line(exc: Exception) -> str:
    """The message of a rejected point; a pydantic error names its field and the rule."""
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            loc, msg = ".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(exc).splitlines()[0]
