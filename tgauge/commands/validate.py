"""`tgauge validate`: measured vs predicted, term by term, for a model, a sweep or the matrix."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from rich.markup import escape
from rich.table import Table

from estimator.spec import ModelSpec, SpecError, Workload
from tgauge.app import (
    UserError,
    app,
    console,
    note,
    out_dir,
    print_json,
    print_table,
    progress_display,
    require,
    user_errors,
)
from tgauge.devices import available_bytes, check_device, check_host_memory, memory_budget
from tgauge.format import human_bytes, human_count, human_flops, validate_defaults_note
from tgauge.options import Impl, Json, Wrap, with_workload

MAX_POINTS = 1_000  # each point builds and runs a model
#: Point.implementation -> what the title says was measured
IMPL_NAMES = {"reference": "reference model", "hf": "Hugging Face transformers"}
COLORS = {"exact": "green", "within": "cyan", "off": "bold red", "not measured": "yellow"}


class Run(NamedTuple):
    """One point to run: the spec, the workload and, to measure the real Hugging Face class
    instead of our reference model, the config.json to build it from."""

    spec: ModelSpec
    workload: Workload
    hf_config: dict[str, Any] | None = None


SECTIONS = ("all", "reference", "hf")


def _points(
    model: str | None,
    matrix: bool,
    workload: Workload,
    sweep: list[str],
    impl: str | None = None,
    section: str = "all",
) -> list[Run]:
    """The points to run: the matrix (its sections), or MODEL under each sweep combination."""
    from estimator.estimate import check_supported
    from estimator.plan.grid import parse_vary
    from tgauge.loading import load_model

    if matrix:
        if model is not None or sweep or impl is not None:
            raise UserError(
                "--matrix runs the built-in cases: give no MODEL, --sweep or --impl "
                "(--section picks reference or hf)"
            )
        return _matrix(section)
    if section != "all":
        raise UserError("--section picks a section of --matrix: give --matrix too")
    if model is None:
        raise UserError("give a MODEL (preset, spec file or config.json) or --matrix")
    spec, config = load_model(model, impl)  # config: the HF class to build, else None
    _check_engine(workload, config)
    varied = [parse_vary(text) for text in sweep]
    if len({field for field, _ in varied}) < len(varied):
        raise UserError("each field may be swept once: combine its values in one --sweep")
    n_points = math.prod(len(values) for _, values in varied)
    if n_points > MAX_POINTS:
        raise UserError(
            f"--sweep gives {n_points:,} points, each a real run; at most {MAX_POINTS:,}"
        )
    if any(field.startswith("spec.") for field, _ in varied):
        raise UserError("validate sweeps workload fields only (e.g. seq_len=128,256)")
    base = workload.model_dump(exclude_unset=True)
    points = []
    for combo in itertools.product(*(values for _, values in varied)):
        update = dict(zip((field for field, _ in varied), combo, strict=True))
        point = Workload.model_validate({**base, **update})
        check_supported(spec, point)
        points.append(Run(spec, point, config))
    return points


def _check_engine(workload: Workload, config: dict[str, Any] | None) -> None:
    """The serving engines validate runs (issue 19): forward everywhere, hf-generate on a
    Hugging Face class (transformers' generate()); vLLM is not run here."""
    if workload.mode == "train" or workload.engine == "forward":
        return
    if workload.engine == "vllm":
        raise UserError(
            "--engine vllm is not measured by tgauge validate (vLLM needs a GPU server); "
            "use --engine hf-generate or forward"
        )
    if config is None:
        raise UserError(
            f"--engine {workload.engine} runs transformers' generate(): give a config.json "
            "or --impl hf (a preset with a Hugging Face twin)"
        )


def _matrix(section: str) -> list[Run]:
    """The cases of tgauge/matrix.py in ``section`` (all: reference, then hf; hf needs
    transformers: without it, 'all' runs the reference section and says so)."""
    import importlib.util

    from tgauge.matrix import cases, hf_cases

    if section not in SECTIONS:
        raise UserError(f"--section={section!r} is invalid: use {', '.join(SECTIONS)}")
    chosen = []
    if section in ("all", "reference"):
        chosen += cases()
    if section in ("all", "hf"):
        if importlib.util.find_spec("transformers") is not None:
            chosen += hf_cases()
        elif section == "hf":
            require("transformers", "tgauge validate --matrix --section hf")
        else:
            note("transformers is not installed: the matrix's HF section is left out")
    return [Run(c.spec.model_copy(update={"name": c.name}), c.workload, c.hf_config)
            for c in chosen]  # fmt: skip


def _resume(points: list[Run], jsonl: Path, device: str) -> list[Run]:
    """The points not yet in ``jsonl`` (same model, implementation, device, workload and tgauge
    version, status ok or did_not_fit): a rerun into the same folder resumes instead of
    repeating them. A point's current record is the newest whole record of this version
    (tgauge/report/validation.py ``current``); older records of a point are marked superseded
    in the file, damaged lines are skipped with a note naming them."""
    from tgauge import __version__
    from tgauge.validate import for_device

    if not jsonl.exists():
        return points
    kept = _mark_superseded(jsonl)
    done = {r.point_key() for r in kept if r.status != "error" and r.tgauge_version == __version__}

    def key(run: Run) -> tuple[str, str, str, str]:
        recorded = for_device(run.workload, device).model_dump(mode="json")
        impl = "reference" if run.hf_config is None else "hf"
        return run.spec.name, impl, device, json.dumps(recorded, sort_keys=True)

    todo = [run for run in points if key(run) not in done]
    if len(todo) < len(points):
        note(
            f"resuming: {len(points) - len(todo)} of {len(points)} points are already in "
            f"{jsonl}; running the other {len(todo)}"
        )
    return todo


def _mark_superseded(jsonl: Path, say: bool = True) -> list[Any]:
    """The current records of ``jsonl``; the superseded ones marked so in the file (a file
    that cannot be rewritten, e.g. a full disk, keeps them unmarked: readers skip them anyway)."""
    from tgauge.report.validation import current, mark_superseded, read_records

    notes: list[str] = []
    kept, superseded = current(read_records(jsonl, notes))
    try:
        marked = mark_superseded(jsonl, superseded)
    except UserError as exc:
        notes.append(f"superseded records left unmarked: {exc}")
        marked = 0
    if marked:
        notes.append(
            f"{jsonl}: marked {marked} record{'s' if marked > 1 else ''} superseded (a newer "
            "record of the same point follows; kept in the file, left out of reports)"
        )
    if say:
        for line in notes:
            note(line)
    return [item.record for item in kept]


@contextlib.contextmanager
def _marking(jsonl: Path | None) -> Iterator[None]:
    """After the run: the records its points superseded marked so (said in a note; silently
    when interrupted, whose one line is the only one)."""
    if jsonl is None:
        yield
        return
    try:
        yield
    except BaseException:
        with contextlib.suppress(SpecError, UserError, OSError):
            if jsonl.exists():
                _mark_superseded(jsonl, say=False)
        raise
    if jsonl.exists():
        _mark_superseded(jsonl)


def _human(unit: str, value: int | None) -> str:
    if value is None:
        return "not measured"
    return {"bytes": human_bytes, "flops": human_flops, "params": human_count}[unit](value)


def point_label(name: str, w: Workload) -> str:
    """``name`` with the mode, b and s it does not already state: a matrix case's name holds
    them ('hf gpt2 train eager b=2 s=32'), a model's name does not ('gpt2-small train b=1
    s=64')."""
    words = name.split()
    extra = [x for x in (w.mode, f"b={w.batch_size}", f"s={w.seq_len}") if x not in words]
    return " ".join([name, *extra])


def _dropout(w: dict[str, Any]) -> str:
    """', dropout 0.1' for a training point with dropout, else ''."""
    p = w.get("dropout") or 0
    return f", dropout {p:g}" if w.get("mode") == "train" and p else ""


def _table(point: Any) -> Table:
    from types import SimpleNamespace

    from tgauge.format import precision_label

    w = point.workload
    precision = precision_label(SimpleNamespace(**{"autocast": None, **w}))
    title = (
        f"{escape(point.model)} · {w['mode']}, b={w['batch_size']}, s={w['seq_len']}, "
        f"{precision}, attention {w['attention_impl']}{_dropout(w)} on {point.device} · "
        f"{'' if w['mode'] == 'train' else 'engine ' + w.get('engine', 'forward') + ' · '}"
        f"{IMPL_NAMES[point.implementation]}" + validate_defaults_note(point.model, w)
    )
    table = Table(title=title, title_justify="left")
    for col in ("term", "predicted", "measured", "difference", "rel. error", "verdict"):
        table.add_column(col, justify="left" if col in ("term", "verdict") else "right")
    for r in point.rows:
        rel = "" if r.rel_error is None else f"{100 * r.rel_error:.2f}%"
        diff = "" if r.abs_error is None else f"{r.abs_error:+,}"
        table.add_row(
            r.term,
            _human(r.unit, r.predicted),
            _human(r.unit, r.measured),
            diff,
            rel,
            f"[{COLORS[r.verdict]}]{r.verdict}[/]",
        )
    if point.peak_phase_measured is not None:
        same = point.peak_phase_predicted == point.peak_phase_measured
        table.caption = (
            f"peak moment: predicted {point.peak_phase_predicted}, measured "
            f"{point.peak_phase_measured} ({'same' if same else 'DIFFERENT'})"
        )
    return table


def _summary(points: list[Any]) -> Table:
    table = Table(title="validation summary", title_justify="left")
    columns = ("point", "section", "status", "rows", "exact", "within", "off", "not measured")
    for col in (*columns, "peak"):
        table.add_column(col)
    for p in points:
        counts = {v: sum(r.verdict == v for r in p.rows) for v in COLORS}
        peak = (
            ""
            if p.peak_phase_measured is None
            else (f"{p.peak_phase_predicted}/{p.peak_phase_measured}")
        )
        table.add_row(
            f"{escape(p.model)} {p.workload['mode']} s={p.workload['seq_len']}",
            p.implementation,
            p.status,
            str(len(p.rows)),
            *(f"[{COLORS[v]}]{counts[v]}[/]" for v in COLORS),
            peak,
        )
    return table


@app.command(
    "validate", epilog="Example: tgauge validate gpt2-small -s 64 --sweep seq_len=32,64 --out out"
)
@user_errors
@with_workload
def validate_command(
    model: Annotated[str | None, typer.Argument(help="preset, spec file or config.json")] = None,
    workload: Workload = None,  # type: ignore[assignment]  (filled by @with_workload)
    device: Annotated[str, typer.Option("--device", help="cpu | cuda")] = "cpu",
    sweep: Annotated[
        list[str], typer.Option("--sweep", help="field=v1,v2 or a..b; repeat to combine")
    ] = [],  # noqa: B006
    impl: Impl = None,
    hf: Annotated[
        bool,
        typer.Option(
            "--hf",
            help="the same as --impl hf (a config.json's default): the Hugging Face class",
        ),
    ] = False,
    matrix: Annotated[
        bool, typer.Option("--matrix", help="run the built-in validation matrix (tgauge/matrix.py)")
    ] = False,
    section: Annotated[
        str,
        typer.Option(
            "--section",
            help="with --matrix: all | reference (our reference model) | hf (the real "
            "transformers classes of tgauge/hf_tiny.py's configs)",
        ),
    ] = "all",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="append each point to OUT/validation.jsonl as it finishes"),
    ] = None,
    json_out: Json = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="run a training step on N ranks of torch.distributed (gloo on CPU) and "
            "measure each rank",
        ),
    ] = 1,
    zero: Annotated[
        int | None,
        typer.Option(
            "--zero",
            min=0,
            max=3,
            help="with --nproc: 1 = DDP + ZeroRedundancyOptimizer, 2 / 3 = FSDP2 "
            "fully_shard with reshard_after_forward False / True; 0: DDP",
        ),
    ] = None,
    tp: Annotated[
        int, typer.Option("--tp", min=1, help="with --nproc: tensor-parallel degree (DTensor)")
    ] = 1,
    sp: Annotated[
        bool, typer.Option("--sp", help="with --tp: sequence parallelism on norms")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="with --nproc: seconds the ranks may run")
    ] = 600.0,
    wrap: Annotated[
        Wrap,
        typer.Option(
            "--wrap",
            help="with --zero 2|3: the FSDP2 units: blocks (each block and the root) or "
            "torchtitan (its apply_fsdp: embedding, blocks, norm + head, root)",
        ),
    ] = Wrap.blocks,
) -> None:
    """Build the model (a preset or spec file: the reference model; a config.json, or --impl
    hf on a preset with a twin: the Hugging Face class), run the workload, measure it and
    compare with the estimator term by term: predicted, measured, difference, relative error
    and a verdict."""
    from tgauge.targets import refuse_quantized

    refuse_quantized(workload, "tgauge validate")
    require("torch", "tgauge validate")  # before any point: each would fail on its own
    from tgauge.safeio import append_line, stop_on_signals
    from tgauge.validate import validate_point

    check_device(device)
    if nproc > 1 or zero is not None or tp > 1 or sp or wrap != Wrap.blocks:
        if matrix or sweep or out is not None:
            raise UserError("--nproc measures one point: give no --matrix, --sweep or --out")
        return _validate_ranks(
            model,
            workload,
            "hf" if hf else impl,
            (nproc, zero, tp, sp, wrap.value),
            timeout,
            json_out,
            device,
        )
    if hf and impl == "reference":
        raise UserError("--hf means --impl hf: give one of --hf and --impl reference")
    points = _points(model, matrix, workload, sweep, "hf" if hf else impl, section)
    if any(run.hf_config is not None for run in points) and not matrix:
        require("transformers", "tgauge validate --impl hf")
    available = available_bytes(device)  # CPU: the limit this process has (cgroup, rlimit)
    if device == "cpu":  # refused up front: what the kernel's OOM killer would end
        budget = memory_budget()
        kill = budget.kill_bytes
        check_host_memory(points, kill, None if kill is None else budget.describe(kill))
    jsonl = None
    if out is not None:
        from tgauge.safeio import hold_folder

        hold_folder(out_dir(out))  # one writer per folder: a second run is refused at once
        jsonl = out / "validation.jsonl"
        points = _resume(points, jsonl, device)
    run_id = uuid.uuid4().hex[:12]
    results: list[Any] = []

    def kept() -> str:
        where = f"appended to {jsonl}" if jsonl is not None else "not saved (no --out)"
        return f"{len(results)} of {len(points)} points finished and {where}"

    with stop_on_signals(kept), progress_display() as progress, _marking(jsonl):
        task = progress.add_task("validating", total=len(points))
        for spec, point_workload, hf_config in points:
            progress.update(
                task,
                description=escape(point_label(spec.name, point_workload)),
            )
            result = validate_point(
                spec, point_workload, device=device, available=available, hf_config=hf_config
            )
            result.run_id = run_id
            if jsonl is not None:
                repaired = append_line(jsonl, result.model_dump_json())
                if repaired:
                    note(repaired)
            results.append(result)
            progress.advance(task)
    if json_out:
        print_json(
            [
                {
                    "model": p.model,
                    "mode": p.workload["mode"],
                    "status": p.status,
                    "implementation": p.implementation,
                    **({"section": p.implementation} if matrix else {}),
                    **r.model_dump(mode="json"),
                }
                for p in results
                for r in p.rows
            ]
        )
        return
    for p in results:
        if p.status != "ok":
            console.print(f"[yellow]{escape(p.model)}: {p.status}[/] {escape('; '.join(p.notes))}")
        else:
            print_table(_table(p))
    if len(results) > 1:
        console.print(_summary(results))
    if jsonl is not None:
        console.print(f"points appended to {jsonl}")


def _validate_ranks(
    model: str | None,
    workload: Workload,
    impl: str | None,
    layout: tuple[int, int | None, int, bool, str],
    timeout: float,
    json_out: bool,
    device: str,
) -> None:
    """`validate MODEL --nproc N`: per-rank rows of tgauge/validate_parallel.py; a failed
    rank is one red line naming it (exit code 1). ``layout``: (nproc, zero, tp, sp, wrap)."""
    from profiler.distributed.launch import RankFailure
    from tgauge.app import fail
    from tgauge.loading import load_model
    from tgauge.validate_parallel import parallel_of, validate_parallel

    if model is None:
        raise UserError("--nproc measures one MODEL: give a preset, spec file or config.json")
    if device != "cpu":
        raise UserError(f"--nproc runs gloo on cpu; --device {device} is not measured yet")
    nproc, zero, tp, sp, wrap = layout
    if nproc < 2:
        raise UserError(f"--nproc={nproc}: --zero, --tp, --sp and --wrap need --nproc 2 or more")
    if wrap != "blocks" and zero not in (2, 3):
        raise UserError(f"--wrap {wrap} names FSDP2 units: give --zero 2 or 3")
    parallel = parallel_of(nproc, zero, tp, sp, wrap)
    spec, config = load_model(model, impl)
    if config is not None:
        require("transformers", "tgauge validate --impl hf --nproc")
    with progress_display() as progress:
        tasks = {r: progress.add_task(f"rank {r}: starting", total=None) for r in range(nproc)}

        def on_phase(phases: dict[int, str]) -> None:
            for rank, phase in phases.items():
                progress.update(tasks[rank], description=f"rank {rank}: {phase}")

        try:
            point = validate_parallel(
                spec, workload, parallel, hf_config=config, timeout_s=timeout, on_phase=on_phase
            )
        except RankFailure as exc:
            fail(str(exc), code=1)
    if json_out:
        print_json([{"model": point.model, **r.model_dump(mode="json")} for r in point.rows])
        return
    console.print(_rank_table(point, nproc))
    for line in point.notes:
        note(line)


def _rank_table(point: Any, nproc: int) -> Table:
    p, w = point.parallel, point.workload
    layout = f"zero={p['shard']} tp={p['tp']}" + (" sp" if p["sp"] else "")
    if p.get("wrap", "blocks") != "blocks":
        layout += f" wrap={p['wrap']}"
    title = (
        f"{escape(point.model)} · train b={w['batch_size']} s={w['seq_len']} on {nproc} ranks "
        f"(gloo, cpu) · {layout} · {IMPL_NAMES[point.implementation]}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("term")
    for r in range(nproc):
        table.add_column(f"rank {r}", justify="right")
    table.add_column("predicted", justify="right")
    table.add_column("verdict")
    by_term: dict[str, dict[int, Any]] = {}
    for row in point.rows:
        by_term.setdefault(row.term, {})[row.rank] = row
    for term, ranks in by_term.items():
        first = next(iter(ranks.values()))
        unit = "params" if first.unit == "params" else "bytes"
        cells = [
            (f"{ranks[r].measured:,}" if first.unit == "count" else _human(unit, ranks[r].measured))
            if r in ranks
            else ""
            for r in range(nproc)
        ]
        preds = list(dict.fromkeys(ranks[r].predicted for r in sorted(ranks)))  # rank order
        predicted = (
            "not modelled"
            if None in preds
            else " / ".join(f"{v:,}" if first.unit == "count" else _human(unit, v) for v in preds)
        )
        order = ("off", "not modelled", "within", "exact")
        worst = next(v for v in order if any(row.verdict == v for row in ranks.values()))
        color = {"not modelled": "yellow"}.get(worst, COLORS.get(worst, "white"))
        table.add_row(term, *cells, predicted, f"[{color}]{worst}[/]")
    phases = ", ".join(f"rank {r}: {ph}" for r, ph in point.peak_phase_measured.items())
    table.caption = f"peak moment measured: {phases}"
    if point.peak_phase_predicted:
        said = ", ".join(f"rank {r}: {ph}" for r, ph in point.peak_phase_predicted.items())
        table.caption += f"; predicted: {said}"
    return table
