"""Evaluate the estimator over a grid of workload (and spec) fields, fast: the result (one row
per point, METRICS), its CSV and JSON files, and ``sweep`` itself (the grid: estimator/plan/
grid.py; how its points are computed: estimator/plan/sweep_points.py).

Speed: a grid's points share a few structures (spec and every workload field but the sizes
batch_size, seq_len, target_len, prompt_len, new_tokens). The first point of a structure runs
``estimate``; the others evaluate the structure's compiled program (estimator/compiled/) at
their sizes, the same numbers ``estimate`` gives (tests/estimator/plan/test_sweep.py). A point
whose sizes the model refuses (past its context) runs ``estimate`` for its exact message.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from estimator.plan.grid import SIZE_FIELDS, Value, check_values
from estimator.plan.sweep_points import METRICS, Group, _one_line
from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload


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
        """csv.writer's text of the columns and rows (None as an empty cell)."""
        return _header(self.columns) + csv_lines(self.rows)

    def records(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=True))

    def to_json(self) -> str:
        """``json.dumps`` of the header and the points, indent 1 (the same text; tests/
        estimator/plan/test_sweep.py)."""
        head = json_head(self.model, self.fields, self.usable_bytes, self.base_workload)
        if not self.rows:
            return head
        return json_open(head) + json_points(self.columns, self.rows) + JSON_CLOSE


def json_head(model: str, fields: list[str], usable: int | None, base: Workload) -> str:
    """The sweep.json of no points: ``json.dumps`` of its header, indent 1."""
    head = {
        "model": model,
        "fields": fields,
        "usable_bytes": usable,
        "base_workload": base.model_dump(mode="json"),
        "points": [],
    }
    return json.dumps(head, indent=1)


def json_open(head: str) -> str:
    """The text of sweep.json before its first point (``head``: json_head)."""
    return head[: -len("[]\n}")] + "[\n"


#: the text of sweep.json after its last point; points are joined by ",\n"
JSON_CLOSE = "\n ]\n}"


def json_points(columns: list[str], rows: list[list[Any]]) -> str:
    """The points of ``rows`` as json.dumps(indent=1) writes them inside sweep.json's list,
    joined by ",\n" (none after the last), written column by column at C speed."""
    n = len(rows)
    keys = [json.dumps(c) for c in columns]
    parts: list[Any] = []
    for k, (key, col) in enumerate(zip(keys, _columns(rows, _json_scalar), strict=True)):
        lead = ("  {\n" if k == 0 else ",\n") + f"   {key}: "
        parts += [itertools.repeat(lead, n), col]
    parts.append(itertools.repeat("\n  },\n", n))
    points = "".join(itertools.chain.from_iterable(zip(*parts, strict=True)))
    return points[: -len(",\n")]


def csv_lines(rows: list[list[Any]]) -> str:
    """csv.writer's lines of ``rows`` (None as an empty cell), column by column; the rows
    with a cell csv quotes go through csv.writer itself."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = _columns(rows, _csv_cell)
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
        writer.writerow(["" if v is None else v for v in rows[j]])
        lines[j] = buf.getvalue()[:-1]
    return "\n".join(lines) + "\n"


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


def sweep(
    spec: ModelSpec,
    base: Workload,
    vary: dict[str, list[Value]],
    usable: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """estimate(spec', workload') for every combination of the ``vary`` values (row-major in
    the order given), all rows in memory (``sweep_chunks`` streams them). A point the
    estimator rejects keeps its message in ``error``. ``progress`` gets the number of points
    done, about every ``PROGRESS_EVERY`` points and at the end."""
    rows: list[Any] = []
    for chunk in sweep_chunks(spec, base, vary, usable):
        rows += chunk
        if progress is not None:
            progress(len(rows))
    return SweepResult.model_construct(
        model=spec.name,
        base_workload=base,
        fields=list(vary),
        columns=[*vary, *METRICS],
        rows=rows,
        usable_bytes=usable,
    )


def sweep_chunks(
    spec: ModelSpec,
    base: Workload,
    vary: dict[str, list[Value]],
    usable: int | None = None,
    chunk: int | None = None,
) -> Iterator[list[list[Any]]]:
    """The rows of ``sweep`` in row-major order, ``chunk`` (default PROGRESS_EVERY) points at
    a time: memory stays bounded by one chunk (and one compiled program per structure)
    whatever the grid size, so a caller can write each chunk out as it comes.

    The points of one structure (the same spec and non-size fields) evaluate that structure's
    compiled program (estimator/compiled/) at their sizes, a chunk at once when numpy is
    installed; the first point of each, and any point the model may refuse, runs ``estimate``
    itself, so every row is what ``estimate`` gives."""
    fields = list(vary)
    check_values(base, vary)
    size = chunk or PROGRESS_EVERY
    spec_fields = [f for f in fields if f.startswith("spec.")]
    specs: dict[tuple[Value, ...], ModelSpec | SpecError] = {}
    structural = [i for i, f in enumerate(fields) if f not in SIZE_FIELDS]
    groups: dict[tuple[Value, ...], Group] = {}
    product = itertools.product(*vary.values())
    while combos := list(itertools.islice(product, size)):
        by_structure: dict[tuple[Value, ...], list[int]] = {}
        for i, combo in enumerate(combos):
            by_structure.setdefault(tuple(combo[j] for j in structural), []).append(i)
        rows: list[Any] = [None] * len(combos)
        for key, idx in by_structure.items():
            group = groups.get(key)
            if group is None:
                combo = combos[idx[0]]
                spec_key = tuple(v for f, v in zip(fields, combo, strict=True) if f in spec_fields)
                if spec_key not in specs:
                    specs[spec_key] = _spec(spec, dict(zip(spec_fields, spec_key, strict=True)))
                group = groups[key] = Group(specs[spec_key], base, fields, usable)
            group.fill(combos, idx, rows)
        yield rows


PROGRESS_EVERY = 8192  # points per block of a structure (and per progress call)


def _spec(spec: ModelSpec, update: dict[str, Value]) -> ModelSpec | SpecError:
    if not update:
        return spec
    data = spec.model_dump(exclude_unset=True) | {k[5:]: v for k, v in update.items()}
    try:
        return ModelSpec.model_validate(data)
    except (SpecError, ValueError) as exc:
        return SpecError(_one_line(exc))
