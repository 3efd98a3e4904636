"""`tgauge sweep MODEL --vary seq_len=512..8192 --vary batch_size=1,2,4`: a grid of estimates."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from estimator.spec import Workload
from tgauge.app import UserError, app, console, out_dir, print_json, user_errors
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
    from estimator.plan.sweep import sweep
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
        out_dir(out)  # before the work: an unusable --out is found at once
    from tgauge.safeio import stop_on_signals, write_files

    kept = (
        "nothing written; sweep.csv and sweep.json in the --out folder are as they were"
        if out is not None
        else "nothing written"
    )
    with stop_on_signals(lambda: kept):
        if n >= PROGRESS_FROM and not as_json:
            from rich.progress import Progress

            with Progress(console=console, transient=True) as bar:
                task = bar.add_task(f"{n:,} points", total=n)
                result = sweep(
                    spec, workload, grid, usable, progress=lambda i: bar.update(task, completed=i)
                )
        else:
            result = sweep(spec, workload, grid, usable)
        if out is not None:  # both files or neither: a kill or a full disk loses nothing
            write_files({out / "sweep.csv": result.to_csv(), out / "sweep.json": result.to_json()})
    if as_json:
        impl = implementation_label(spec)  # the code the estimates describe
        print_json([{**record, "implementation": impl} for record in result.records()])
        return
    applied_line = defaults_note(model, defaults_applied)
    if applied_line:
        console.print(f"[dim]{escape(applied_line)}[/]", highlight=False)
    _print(result, spec)
    if out is not None:
        console.print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.json'}")


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


def _print(result: object, spec: object, limit: int = 40) -> None:
    """The first ``limit`` points; a metric column empty (or 0) on every row is left out."""
    from operator import itemgetter

    from rich.table import Table

    rows = result.rows  # type: ignore[attr-defined]
    index = {c: i for i, c in enumerate(result.columns)}  # type: ignore[attr-defined]
    base = result.base_workload  # type: ignore[attr-defined]
    fields = result.fields  # type: ignore[attr-defined]
    title = (
        f"sweep of {escape(result.model)}: {len(rows)} points, varying {', '.join(fields)}; "  # type: ignore[attr-defined]
        f"other settings {describe_workload(spec, base, omit=fields)}"
    )
    table = Table(title=title)
    # a cell is empty when None, "" or 0: falsy (checked by map at C speed on 10^5 rows)
    shown = [m for m in _SHOWN if any(map(bool, map(itemgetter(index[m]), rows)))]
    for col in fields:
        table.add_column(col, justify="right", min_width=len(col))
    for m in shown:
        table.add_column(_SHOWN[m][0], justify="left" if m in ("peak_phase", "error") else "right")
    for row in rows[:limit]:
        cells = [escape(str(row[index[f]])) for f in fields]
        cells += ["-" if row[index[m]] is None else _SHOWN[m][1](row[index[m]]) for m in shown]
        table.add_row(*cells)
    console.print(table)
    if len(rows) > limit:
        console.print(f"... {len(rows) - limit} more rows (use --out or --json)")
