"""Evaluate the estimator over a grid of workload (and spec) fields, fast.

Ranges: ``a..b`` doubles from a up to b (512..4096 -> 512, 1024, 2048, 4096), ``a..b:step``
steps linearly, ``x,y,z`` lists values (numbers or words). A field ``spec.<name>`` varies a
ModelSpec field instead of a Workload field.

Speed: a grid point differs from its neighbours in one or two fields, so each Workload is
made with ``model_copy(update=...)`` of a validated base plus one validation of the fields
that were changed (the validator fills derived defaults), and the ModelSpec per spec
combination is built once. Every point equals ``estimate(spec, workload)`` exactly: the
estimator itself is called, nothing is re-derived here.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterator
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
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(["" if v is None else v for v in row] for row in self.rows)
        return buf.getvalue()

    def records(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=True))

    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "fields": self.fields,
                "usable_bytes": self.usable_bytes,
                "base_workload": self.base_workload.model_dump(mode="json"),
                "points": list(self.records()),
            },
            indent=1,
        )


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
    the order given). A point the estimator rejects keeps its message in ``error``."""
    from estimator.estimate import estimate

    fields = list(vary)
    _check_copy_safe(base, vary)
    spec_fields = [f for f in fields if f.startswith("spec.")]
    specs: dict[tuple[Value, ...], ModelSpec | SpecError] = {}
    rows = []
    empty = [None] * (len(METRICS) - 1)
    for i, combo in enumerate(itertools.product(*vary.values())):
        key = tuple(v for f, v in zip(fields, combo, strict=True) if f.startswith("spec."))
        if key not in specs:
            specs[key] = _spec(spec, dict(zip(spec_fields, key, strict=True)))
        try:
            s = specs[key]
            if isinstance(s, SpecError):
                raise s
            rows.append([*combo, *metrics(estimate(s, _workloads(base, fields, combo)), usable)])
        except (SpecError, ValueError) as exc:
            rows.append([*combo, *empty, _one_line(exc)])
        if progress is not None:
            progress(i + 1)
    return SweepResult(
        model=spec.name,
        base_workload=base,
        fields=fields,
        columns=[*fields, *METRICS],
        rows=rows,
        usable_bytes=usable,
    )


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
