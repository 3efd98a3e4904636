"""The grid of a sweep: ``--vary`` ranges parsed, their fields and values checked.

Ranges: ``a..b`` doubles from a up to b (512..4096 -> 512, 1024, 2048, 4096), ``a..b:step``
steps linearly, ``x,y,z`` lists values (numbers or words). A field ``spec.<name>`` varies a
ModelSpec field instead of a Workload field; CLI option names work too (FIELD_ALIASES).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import TypeAdapter, ValidationError

from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import SIZE_FIELDS, Workload

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


def check_values(base: Workload, vary: dict[str, list[Value]]) -> None:
    """Validate each value of a copy-safe field once (model_copy does not validate), and
    reject up front a value no combination can make valid (``mode=bogus``: not one of the
    choices, or of the wrong type); a value only some combinations reject becomes an error
    row of those points."""
    for field, values in vary.items():
        for v in values:
            if field in SIZE_FIELDS:
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


def grid_size(vary: dict[str, list[Value]]) -> int:
    n = 1
    for values in vary.values():
        n *= len(values)
    return n
