"""`tgauge sweep MODEL --vary seq_len=512..8192 --vary batch_size=1,2,4`: a grid of estimates."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from estimator.spec import Workload
from tgauge.app import UserError, app, console, out_dir, user_errors
from tgauge.format import defaults_note, describe_workload, human_flops, implementation_label
from tgauge.options import Impl, Json, with_workload

PROGRESS_FROM = 500  # grids at least this large show a progress bar
MAX_POINTS = 1_000_000  # larger grids would run for hours: refuse them up front


@app.command(
    "sweep",
    epilog="Example: tgauge sweep gpt2-small --vary seq_len=512..8192 --vary batch_size=1,2,4",
)
@user_errors
@with_workload(preset_defaults=True)
def sweep_command(
    model: Annotated[str, typer.Argument(help="preset name, spec file or HF config.json")],
    vary: Annotated[
        list[str],
        typer.Option(
            "--vary",
            help="field=range: a..b (doubling), "
            "a..b:step (linear) or x,y,z; spec.<field> varies "
            "the model; CLI names work too (attention=eager,fused)",
        ),
    ] = [],  # noqa: B006
    gpu: Annotated[
        str | None,
        typer.Option("--gpu", help="add fits / headroom columns for this GPU's usable memory"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write sweep.csv and sweep.json into this folder")
    ] = None,
    impl: Impl = None,
    *,
    workload: Workload,
    defaults_applied: dict[str, object],
    as_json: Json = False,
) -> None:
    """Evaluate the estimator on every combination of the --vary values."""
    from estimator.plan.grid import grid_size, parse_vary
    from estimator.plan.hardware import get_gpu, usable_bytes
    from tgauge.loading import load_spec

    if not vary:
        raise UserError("--vary is required, e.g. --vary seq_len=512..8192")
    spec = load_spec(model, impl)
    pairs = [parse_vary(v) for v in vary]
    grid = dict(pairs)
    if len(grid) < len(pairs):
        raise UserError("each field may be varied once: combine its values in one --vary")
    usable = usable_bytes(get_gpu(gpu)) if gpu else None
    n = grid_size(grid)
    if n > MAX_POINTS:
        raise UserError(
            f"the --vary grid has {n:,} points; at most {MAX_POINTS:,}: use fewer values"
        )
    if out is not None:
        from tgauge.safeio import hold_folder

        hold_folder(out_dir(out))  # before the work: an unusable or busy --out is found at once
    from tgauge.safeio import stop_on_signals

    kept = (
        "nothing written; sweep.csv and sweep.json in the --out folder are as they were"
        if out is not None
        else "nothing written"
    )
    with stop_on_signals(lambda: kept):
        shown = _stream(spec, workload, grid, usable, out, n, as_json)
    if as_json:
        return
    applied_line = defaults_note(model, defaults_applied)
    if applied_line:
        console.print(f"[dim]{escape(applied_line)}[/]", highlight=False)
    _print(shown, spec)
    if out is not None:
        console.print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.json'}")


def _stream(
    spec: Any,
    workload: Workload,
    grid: dict[str, list[Any]],
    usable: int | None,
    out: Path | None,
    n: int,
    as_json: bool,
) -> "_Shown":
    """Evaluate the grid a chunk at a time (estimator.plan.sweep.sweep_chunks) and write each
    chunk as it comes: to OUT/sweep.csv and sweep.json (staged beside them, renamed into place
    together at the end: both files or neither), to stdout with --json. Memory stays bounded
    by one chunk whatever the grid size; what the table shows is kept (``_Shown``)."""
    import contextlib

    from estimator.plan.sweep import (
        JSON_CLOSE,
        METRICS,
        csv_lines,
        json_head,
        json_open,
        json_points,
        sweep_chunks,
    )
    from estimator.plan.sweep import _header as csv_header
    from tgauge.safeio import staged_files

    fields = list(grid)
    columns = [*fields, *METRICS]
    shown = _Shown(spec.name, workload, fields, columns)
    stdout = _JsonLines(implementation_label(spec), columns) if as_json else None
    with contextlib.ExitStack() as stack:
        files = []
        if out is not None:
            files = stack.enter_context(staged_files([out / "sweep.csv", out / "sweep.json"]))
        update = None
        if n >= PROGRESS_FROM and not as_json:
            from rich.progress import Progress

            bar = stack.enter_context(Progress(console=console, transient=True))
            task = bar.add_task(f"{n:,} points", total=n)
            update = lambda done: bar.update(task, completed=done)  # noqa: E731
        head = json_head(spec.name, fields, usable, workload)
        if files:
            files[0].write(csv_header(columns))
        for rows in sweep_chunks(spec, workload, grid, usable):
            if files:
                files[0].write(csv_lines(rows))
                files[1].write(
                    (json_open(head) if not shown.n else ",\n") + json_points(columns, rows)
                )
            if stdout is not None:
                stdout.write(rows)
            shown.add(rows)
            if update is not None:
                update(shown.n)
        if files:
            files[1].write(JSON_CLOSE if shown.n else head)
    if stdout is not None:
        stdout.close()
    return shown


class _JsonLines:
    """--json on stdout, written a chunk at a time: the text of ``print_json`` of the list of
    records (json.dumps indent 2), each with the implementation its estimates describe."""

    def __init__(self, implementation: str, columns: list[str]) -> None:
        self.implementation, self.columns, self.started = implementation, columns, False

    def write(self, rows: list[list[Any]]) -> None:
        import json
        import sys

        parts = []
        for row in rows:
            record = {
                **dict(zip(self.columns, row, strict=True)),
                "implementation": self.implementation,
            }
            text = json.dumps(record, indent=2).replace("\n", "\n  ")
            parts.append(("[\n  " if not self.started else ",\n  ") + text)
            self.started = True
        sys.stdout.write("".join(parts))

    def close(self) -> None:
        import sys

        sys.stdout.write("\n]\n" if self.started else "[]\n")
        sys.stdout.flush()


class _Shown:
    """What the table shows of a streamed sweep: its first ``limit`` rows, how many rows in
    all, and the metric columns that are not empty (None, "" or 0) on every row."""

    def __init__(
        self, model: str, base: Workload, fields: list[str], columns: list[str], limit: int = 40
    ) -> None:
        self.model, self.base_workload, self.fields, self.columns = model, base, fields, columns
        self.index = {c: i for i, c in enumerate(columns)}
        self.limit, self.head, self.n = limit, [], 0
        self.filled: set[str] = set()

    def add(self, rows: list[list[Any]]) -> None:
        from operator import itemgetter

        if len(self.head) < self.limit:
            self.head += rows[: self.limit - len(self.head)]
        self.n += len(rows)
        for m in _SHOWN:  # falsy cells checked by map at C speed on a chunk of rows
            if m not in self.filled and any(map(bool, map(itemgetter(self.index[m]), rows))):
                self.filled.add(m)


GiB = 2**30
#: metric column -> (header, format); bytes in GiB with the unit in the header
_SHOWN = {
    "peak_memory_bytes": ("peak (GiB)", lambda v: f"{v / GiB:,.2f}"),
    "peak_phase": ("peak phase", str),
    "kv_cache_bytes": ("KV cache (GiB)", lambda v: f"{v / GiB:,.2f}"),
    "flops": ("FLOPs", human_flops),
    "fits": ("fits", lambda v: "yes" if v else "no"),
    "headroom_bytes": ("headroom (GiB)", lambda v: f"{v / GiB:,.2f}"),
    "error": ("error", escape),
}


def _print(shown: _Shown, spec: object) -> None:
    """The first rows of the sweep; a metric column empty (or 0) on every row is left out."""
    from rich.table import Table

    index, fields = shown.index, shown.fields
    title = (
        f"sweep of {escape(shown.model)}: {shown.n} points, varying {', '.join(fields)}; "
        f"other settings {describe_workload(spec, shown.base_workload, omit=fields)}"
    )
    table = Table(title=title)
    metrics = [m for m in _SHOWN if m in shown.filled]
    for col in fields:
        table.add_column(col, justify="right", min_width=len(col))
    for m in metrics:
        table.add_column(_SHOWN[m][0], justify="left" if m in ("peak_phase", "error") else "right")
    for row in shown.head:
        cells = [escape(str(row[index[f]])) for f in fields]
        cells += ["-" if row[index[m]] is None else _SHOWN[m][1](row[index[m]]) for m in metrics]
        table.add_row(*cells)
    console.print(table)
    if shown.n > shown.limit:
        console.print(f"... {shown.n - shown.limit} more rows (use --out or --json)")
