"""`tgauge sweep MODEL --vary seq_len=512..8192 --vary batch_size=1,2,4`: a grid of estimates."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from estimator.spec import Workload
from tgauge.app import UserError, app, console, out_dir, print_json, user_errors
from tgauge.format import human_bytes, human_flops
from tgauge.options import Json, with_workload

PROGRESS_FROM = 500  # grids at least this large show a progress bar
MAX_POINTS = 1_000_000  # larger grids would run for hours: refuse them up front


@app.command("sweep")
@user_errors
@with_workload
def sweep_command(
    model: Annotated[str, typer.Argument(help="preset name, spec file or HF config.json")],
    vary: Annotated[
        list[str],
        typer.Option(
            "--vary",
            help="field=range: a..b (doubling), "
            "a..b:step (linear) or x,y,z; spec.<field> varies "
            "the model",
        ),
    ] = [],  # noqa: B006
    gpu: Annotated[
        str | None,
        typer.Option("--gpu", help="add fits / headroom columns for this GPU's usable memory"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write sweep.csv and sweep.json into this folder")
    ] = None,
    *,
    workload: Workload,
    as_json: Json = False,
) -> None:
    """Evaluate the estimator on every combination of the --vary values."""
    from estimator.hardware import get_gpu, usable_bytes
    from estimator.sweep import grid_size, parse_vary, sweep
    from tgauge.loading import load_spec

    if not vary:
        raise UserError("--vary is required, e.g. --vary seq_len=512..8192")
    spec = load_spec(model)
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
        print_json(list(result.records()))
        return
    _print(result)
    if out is not None:
        console.print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.json'}")


def _print(result: object, limit: int = 40) -> None:
    from rich.table import Table

    table = Table(title=f"sweep of {escape(result.model)}: {len(result.rows)} points")  # type: ignore[attr-defined]
    fields = result.fields  # type: ignore[attr-defined]
    shown = ["peak_memory_bytes", "peak_phase", "kv_cache_bytes", "flops", "fits", "error"]
    for col in [*fields, *shown]:
        table.add_column(col, justify="left" if col in ("peak_phase", "error") else "right")
    for rec in list(result.records())[:limit]:  # type: ignore[attr-defined]
        cells = [escape(str(rec[f])) for f in fields]
        cells += [
            human_bytes(rec["peak_memory_bytes"]),
            rec["peak_phase"] or "-",
            human_bytes(rec["kv_cache_bytes"]),
            human_flops(rec["flops"]),
            "-" if rec["fits"] is None else ("yes" if rec["fits"] else "no"),
            escape(rec["error"] or ""),
        ]
        table.add_row(*cells)
    console.print(table)
    if len(result.rows) > limit:  # type: ignore[attr-defined]
        console.print(f"... {len(result.rows) - limit} more rows (use --out or --json)")  # type: ignore[attr-defined]
