"""Evaluate the estimator over a grid of workload (and spec) fields, fast.

Ranges: ``a..b`` doubles from a up to b (512..4096 -> 512, 1024, 2048, 4096), ``a..b:step``
steps linearly, ``x,y,z`` lists values (numbers or words). A field ``spec.<name>`` varies a
ModelSpec field instead of a Workload field.

Speed: a grid's points share a few structures (spec and every workload field but the sizes
batch_size, seq_len, target_len, prompt_len, new_tokens). The first point of a structure runs
``estimate``; the others evaluate the structure's compiled program (estimator/compiled.py) at
their sizes, the same numbers ``estimate`` gives (tests/estimator/test_sweep.py). A point
whose sizes the model refuses (past its context) runs ``estimate`` for its exact message.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload

Value = int | float | str | bool


def _atom(text: str) -> Value:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


MAX_RANGE_VALUES = 1_000_000  # a..b:step beyond this is a typo, not a sweep


def parse_values(text: str) -> list[Value]:
    """Values of one --vary range: ``a..b`` (doubling), ``a..b:step`` (linear), ``x,y,z``."""
    if ".." in text:
        lo_text, _, rest = text.partition("..")
        hi_text, _, step_text = rest.partition(":")
        try:
            lo, hi = int(lo_text), int(hi_text)
            step = int(step_text) if step_text else None
        except ValueError:
            raise SpecError(
                f"range={text!r} is invalid: use a..b, a..b:step with integers, or a comma list"
            ) from None
        if lo <= 0 or hi < lo or (step is not None and step <= 0):
            raise SpecError(f"range={text!r} is invalid: needs 0 < a <= b and step > 0")
        if step is not None:
            if (hi - lo) // step + 1 > MAX_RANGE_VALUES:
                raise SpecError(
                    f"range={text!r} is invalid: {(hi - lo) // step + 1:,} values, "
                    f"at most {MAX_RANGE_VALUES:,}; use a larger step"
                )
            return list(range(lo, hi + 1, step))
        out, v = [], lo
        while v <= hi:
            out.append(v)
            v *= 2
        return out
    values = [_atom(v) for v in text.split(",") if v.strip()]
    if not values:
        raise SpecError(f"range={text!r} is invalid: no values")
    return values


#: the CLI's option names (tgauge/options.py) for Workload fields named differently
FIELD_ALIASES: dict[str, str] = {
    "attention": "attention_impl",
    "pattern": "attention_pattern",
    "b": "batch_size",
    "s": "seq_len",
}


def parse_vary(text: str) -> tuple[str, list[Value]]:
    """``field=range`` -> (field, values); the field must be a Workload or spec.* field (or
    a CLI option name of one, FIELD_ALIASES: ``attention`` for attention_impl)."""
    field, sep, rng = text.partition("=")
    field = field.strip().lstrip("-").replace("-", "_")
    field = FIELD_ALIASES.get(field, field)
    if not sep:
        raise SpecError(f"vary={text!r} is invalid: use field=range, e.g. seq_len=512..8192")
    if field.startswith("spec."):
        if field[5:] not in ModelSpec.model_fields:
            raise SpecError(
                f"vary field={field!r} is not a ModelSpec field; fields: "
                f"{', '.join(ModelSpec.model_fields)}"
            )
    elif field not in Workload.model_fields:
        raise SpecError(
            f"vary field={field!r} is not a Workload field; fields: "
            f"{', '.join(Workload.model_fields)} (or spec.<field>; aliases: "
            f"{', '.join(f'{k}={v}' for k, v in FIELD_ALIASES.items())})"
        )
    return field, parse_values(rng)


#: fields whose only constraint is their own range: a validated base can be copied with them
_COPY_SAFE = frozenset({"batch_size", "seq_len", "target_len", "prompt_len", "new_tokens"})

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


class SweepResult(BaseModel):
    """One row per grid point: the varied values, then METRICS (None where not applicable)."""

    model_config = ConfigDict(frozen=True)

    model: str
    base_workload: Workload
    fields: list[str]
    columns: list[str]
    rows: list[list[Any]]
    usable_bytes: int | None = None

    def to_csv(self) -> str:
        """csv.writer's text of the columns and rows (None as an empty cell), column by
        column; the rows with a cell csv quotes go through csv.writer itself."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        if not self.rows:
            return buf.getvalue()
        columns = _columns(self.rows, _csv_cell)
        quoted = set()
        for col in columns:  # None: a string csv quotes (its row is written by csv.writer)
            if isinstance(col, list) and None in col:
                hits = [j for j, v in enumerate(col) if v is None]
                quoted.update(hits)
                for j in hits:
                    col[j] = ""
        lines = list(map(",".join, zip(*columns, strict=True)))
        for j in quoted:
            buf.seek(0)
            buf.truncate()
            writer.writerow(["" if v is None else v for v in self.rows[j]])
            lines[j] = buf.getvalue()[:-1]
        return _header(self.columns) + "\n".join(lines) + "\n"

    def records(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=True))

    def to_json(self) -> str:
        """``json.dumps`` of the header and the points, indent 1, written column by column
        (the same text; tests/estimator/test_sweep.py)."""
        head = {
            "model": self.model,
            "fields": self.fields,
            "usable_bytes": self.usable_bytes,
            "base_workload": self.base_workload.model_dump(mode="json"),
            "points": [],
        }
        text = json.dumps(head, indent=1)
        if not self.rows:
            return text
        n = len(self.rows)
        keys = [json.dumps(c) for c in self.columns]
        parts: list[Any] = []
        for k, (key, col) in enumerate(zip(keys, _columns(self.rows, _json_scalar), strict=True)):
            lead = ("  {\n" if k == 0 else ",\n") + f"   {key}: "
            parts += [itertools.repeat(lead, n), col]
        parts.append(itertools.repeat("\n  },\n", n))
        points = "".join(itertools.chain.from_iterable(zip(*parts, strict=True)))
        return text[: -len("[]\n}")] + "[\n" + points[: -len(",\n")] + "\n ]\n}"


def _header(columns: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue()


def _columns(rows: list[list[Any]], text: Callable[[Any], str | None]) -> list[Any]:
    """Each column of ``rows`` as ``text`` writes its cells: a column of ints (the most) by
    int.__repr__, of strings through one lookup of its distinct values, at C speed; the
    others cell by cell."""
    out: list[Any] = []
    for col in zip(*rows, strict=True):
        kinds = set(map(type, col))
        if kinds == {int}:
            out.append(map(int.__repr__, col))
        elif kinds == {str} or kinds == {type(None)}:
            lookup = {v: text(v) for v in dict.fromkeys(col)}
            out.append(list(map(lookup.__getitem__, col)))
        else:
            out.append([text(v) for v in col])
    return out


def _csv_cell(v: Any) -> str | None:
    """A cell as csv.writer writes it unquoted (str of the value, None empty); None when csv
    would quote it (a delimiter, a quote or a line break in it)."""
    if type(v) is int:
        return int.__repr__(v)
    if v is None:
        return ""
    text = str(v)
    if any(c in text for c in ',"\n\r'):
        return None
    return text


def _json_scalar(v: Any) -> str:
    """json.dumps of one value of a row (an int, a float, a string, a bool or None)."""
    if type(v) is int:
        return int.__repr__(v)
    if v is None:
        return "null"
    return json.dumps(v)


def metrics(est: Any, usable: int | None) -> list[Any]:
    """The METRICS of one Estimate (fits/headroom when a usable budget is given)."""
    mem = est.memory.terms
    opt = sum(v for k, v in mem.items() if k.startswith("optimizer."))
    act = sum(v for k, v in mem.items() if k.startswith("activations."))
    dec = est.decode
    peak = est.peak_memory_bytes
    return [
        est.params.total,
        peak,
        est.peak_phase,
        mem.get("weights", 0),
        mem.get("gradients", 0),
        opt,
        act,
        est.kv_cache.total,
        est.flops.total,
        dec.total_with_cache_flops if dec else None,
        dec.total_without_cache_flops if dec else None,
        None if usable is None else peak <= usable,
        None if usable is None else usable - peak,
        "",
    ]


def _workloads(base: Workload, fields: list[str], combo: tuple[Value, ...]) -> Workload:
    update = {f: v for f, v in zip(fields, combo, strict=True) if not f.startswith("spec.")}
    if set(update) <= _COPY_SAFE:
        return base.model_copy(update=update)
    return Workload.model_validate(base.model_dump(exclude_unset=True) | update)


def _check_copy_safe(base: Workload, vary: dict[str, list[Value]]) -> None:
    """Validate each value of a copy-safe field once (model_copy does not validate), and
    reject up front a value no combination can make valid (``mode=bogus``: not one of the
    choices, or of the wrong type); a value only some combinations reject becomes an error
    row of those points."""
    for field, values in vary.items():
        for v in values:
            if field in _COPY_SAFE:
                Workload.model_validate(base.model_dump(exclude_unset=True) | {field: v})
                continue
            model, name = (ModelSpec, field[5:]) if field.startswith("spec.") else (Workload, field)
            info = model.model_fields[name]
            typ = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            try:
                TypeAdapter(typ).validate_python(v)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise SpecError(f"vary {field}={v!r} is invalid: {msg}") from None


def sweep(
    spec: ModelSpec,
    base: Workload,
    vary: dict[str, list[Value]],
    usable: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """estimate(spec', workload') for every combination of the ``vary`` values (row-major in
    the order given). A point the estimator rejects keeps its message in ``error``.

    The points of one structure (the same spec and non-size fields) evaluate that structure's
    compiled program (estimator/compiled.py) at their sizes, all at once when numpy is
    installed; the first point of each, and any point the model may refuse, runs ``estimate``
    itself, so every row is what ``estimate`` gives. ``progress`` gets the number of points
    done, about every ``PROGRESS_EVERY`` points and at the end."""
    fields = list(vary)
    _check_copy_safe(base, vary)
    spec_fields = [f for f in fields if f.startswith("spec.")]
    specs: dict[tuple[Value, ...], ModelSpec | SpecError] = {}
    structural = [i for i, f in enumerate(fields) if f not in _COPY_SAFE]
    combos = list(itertools.product(*vary.values()))
    by_structure: dict[tuple[Value, ...], list[int]] = {}
    for i, combo in enumerate(combos):
        by_structure.setdefault(tuple(combo[j] for j in structural), []).append(i)
    rows: list[Any] = [None] * len(combos)
    done = 0
    for idx in by_structure.values():
        combo = combos[idx[0]]
        spec_key = tuple(v for f, v in zip(fields, combo, strict=True) if f in spec_fields)
        if spec_key not in specs:
            specs[spec_key] = _spec(spec, dict(zip(spec_fields, spec_key, strict=True)))
        group = _Group(specs[spec_key], base, fields, usable)
        for start in range(0, len(idx), PROGRESS_EVERY):
            block = idx[start : start + PROGRESS_EVERY]
            group.fill(combos, block, rows)
            done += len(block)
            if progress is not None:
                progress(done)
    return SweepResult.model_construct(
        model=spec.name,
        base_workload=base,
        fields=fields,
        columns=[*fields, *METRICS],
        rows=rows,
        usable_bytes=usable,
    )


PROGRESS_EVERY = 8192  # points per block of a structure (and per progress call)


def _metrics_raw(spec: ModelSpec, sh: Any) -> tuple[Any, ...]:
    """(refused, then METRICS[1:11]: what ``metrics`` reads of an Estimate) of the run ``sh``,
    the function estimator/compiled.py compiles for sweeps. ``refused``: the sizes break a
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
    mem, dec = raw["memory"], raw["decode"]
    return (
        False,
        raw["peak"],
        raw["phase"],
        mem.get("weights", 0),
        mem.get("gradients", 0),
        sum(v for k, v in mem.items() if k.startswith("optimizer.")),
        sum(v for k, v in mem.items() if k.startswith("activations.")),
        sum(raw["kv_cache"].values()),
        sum(raw["flops"].values()),
        dec["total_with_cache_flops"] if dec else None,
        dec["total_without_cache_flops"] if dec else None,
    )


class _Group:
    """The points of one structure: its spec and workload fields but the sizes."""

    def __init__(
        self, spec: ModelSpec | SpecError, base: Workload, fields: list[str], usable: int | None
    ) -> None:
        self.spec, self.base, self.fields, self.usable = spec, base, fields, usable
        self.sizes = [(j, f) for j, f in enumerate(fields) if f in _COPY_SAFE]
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
        sizes = {k: d[k] for k in _COPY_SAFE}
        for j, f in self.sizes:
            sizes[f] = combo[j]
        return sizes

    def _row(self, combo: tuple[Value, ...], values: Sequence[Any]) -> list[Any]:
        peak, usable = values[0], self.usable
        fits = None if usable is None else peak <= usable
        headroom = None if usable is None else usable - peak
        return [*combo, self.n_params, *values, fits, headroom, ""]

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
        n, usable = len(idx), self.usable
        if usable is None:
            fits: Any = itertools.repeat(None, n)
            headroom: Any = itertools.repeat(None, n)
        else:
            fits = [None if p is None else p <= usable for p in values[0]]
            headroom = [None if p is None else usable - p for p in values[0]]
        block = zip(
            *zip(*(combos[i] for i in idx), strict=True),
            itertools.repeat(self.n_params, n),
            *values,
            fits,
            headroom,
            itertools.repeat("", n),
            strict=True,
        )
        for i, row, no in zip(idx, map(list, block), refused, strict=True):
            rows[i] = self._slow(combos[i]) if no else row
        return True


def _one_line(exc: Exception) -> str:
    """The message of a rejected point; a pydantic error names its field and the rule."""
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            loc, msg = ".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(exc).splitlines()[0]


def _spec(spec: ModelSpec, update: dict[str, Value]) -> ModelSpec | SpecError:
    if not update:
        return spec
    data = spec.model_dump(exclude_unset=True) | {k[5:]: v for k, v in update.items()}
    try:
        return ModelSpec.model_validate(data)
    except (SpecError, ValueError) as exc:
        return SpecError(_one_line(exc))


def grid_size(vary: dict[str, list[Value]]) -> int:
    n = 1
    for values in vary.values():
        n *= len(values)
    return n
