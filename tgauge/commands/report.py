"""`tgauge report --model M --out DIR`: a Markdown file and one self-contained HTML page."""

from pathlib import Path
from typing import Annotated, Any

import typer

from estimator.spec import Workload
from tgauge.app import UserError, app, console, note, out_dir, print_json, require, user_errors
from tgauge.format import describe_workload, human_bytes, human_flops
from tgauge.options import Json, with_workload

MAX_CHART_POINTS = 200  # x values of one chart; each is a full estimate


@app.command(
    "report",
    epilog="Example: tgauge report --model gpt2-small --validation out/validation.jsonl --out out",
)
@user_errors
@with_workload(preset_defaults=True)
def report_command(
    out: Annotated[Path, typer.Option("--out", help="folder for report.md, report.html")],
    model: Annotated[list[str], typer.Option("--model", help="model(s) to chart")] = [],  # noqa: B006
    sweep_file: Annotated[
        Path | None, typer.Option("--sweep", help="sweep.json of `tgauge sweep --out`")
    ] = None,
    validation: Annotated[
        Path | None,
        typer.Option("--validation", help="validation.jsonl of `tgauge validate --out`"),
    ] = None,
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", help="x axis of the sequence charts")
    ] = "128..8192",
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="add the section 'Transformer vs LSTM at equal parameters' for these models "
            "(comma-separated recurrent and Transformer presets; 'default': elmo,gpt2-small,"
            "bert-base)",
        ),
    ] = None,
    compare_seq_lens: Annotated[
        str,
        typer.Option("--compare-seq-lens", help="sequence lengths of the --compare section"),
    ] = "64,128,256,512,1024,2048",
    compare_batch: Annotated[
        int, typer.Option("--compare-batch-size", min=1, help="b of the --compare section")
    ] = 8,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="cuda | cpu: the kernels the --model sections assume (default: the validated "
            "workload of that model when --validation holds one, else cuda)",
        ),
    ] = None,
    *,
    workload: Workload,
    as_json: Json = False,
) -> None:
    """Write a report (charts, tables) a user can send to a colleague."""
    from tgauge.report.writers import Report, write_report

    if not (model or sweep_file or validation or compare):
        raise UserError("nothing to report: give --model, --sweep, --validation or --compare")
    if model or validation or compare:  # their sections hold charts; say so before reading anything
        require("matplotlib", "tgauge report (its charts)")
    if device not in (None, "cuda", "cpu"):
        raise UserError(f"--device={device!r} is invalid: use cuda or cpu")
    records = _read_validation(validation) if validation is not None else []
    sections = [_model_section(m, workload, seq_lens, device, records) for m in model]
    if sweep_file is not None:
        sections.append(_sweep_section(sweep_file))
    if validation is not None:
        sections.append(_validation_section(validation, records))
    if compare:
        sections.append(_compare_section(compare, compare_seq_lens, compare_batch))
    if any(s.charts for s in sections):  # nothing is written without the chart library
        require("matplotlib", "tgauge report (its charts)")
    from tgauge.safeio import hold_folder

    hold_folder(out_dir(out))  # one writer; a killed run's staging folders are removed
    from tgauge.report.writers import live_report
    from tgauge.safeio import stop_on_signals

    before = live_report(out)

    def kept() -> str:
        if live_report(out) != before:
            return f"the new report is in {out}"
        if before is None:
            return f"no report was written into {out}"
        return f"the report in {out} is as it was"

    with stop_on_signals(kept):
        files = write_report(Report(title="tgauge report", sections=sections), out)
    if as_json:
        print_json(files.model_dump(mode="json"))
        return
    console.print(f"wrote {files.markdown} and {files.html} ({len(files.charts)} chart files)")


_SHOWN_ALWAYS = ("mode", "batch_size", "seq_len")
_DERIVED = ("compute_dtype", "kv_cache_dtype", "device", "optimizer", "optimizer_impl")
_STATED = ("dtype", "compute_dtype", "master_weights", "attention_impl", "checkpointing")


def _workload_summary(fields: dict[str, Any]) -> str:
    """'train b=1 s=32' plus every field that differs from the Workload default."""
    defaults = Workload().model_dump(mode="json")
    mode, b, s = (fields.get(k) for k in _SHOWN_ALWAYS)
    extra = [
        f"{k}={v}"
        for k, v in fields.items()
        if k not in _SHOWN_ALWAYS + _DERIVED and k in defaults and v != defaults[k]
    ]
    if mode == "train" and fields.get("optimizer", "adamw") != "none":
        extra.append(f"optimizer {fields.get('optimizer', 'adamw')} ({_impl(fields)} step)")
    return " ".join([f"{mode} b={b} s={s}", *extra])


def _impl(fields: dict[str, Any]) -> str:
    """The optimizer implementation a recorded workload ran (torch's choice on its device
    when the record leaves it out: estimator.spec.workload.resolved_optimizer_impl)."""
    from estimator.spec.workload import resolved_optimizer_impl

    try:
        known = {k: v for k, v in fields.items() if k in Workload.model_fields}
        return str(resolved_optimizer_impl(Workload.model_validate(known)))
    except ValueError:  # pydantic's ValidationError, SpecError: a record of another version
        return str(fields.get("optimizer_impl") or "?")


def _recorded(record: Any) -> dict[str, Any]:
    """A record's workload with the kernels of the device it ran on (tgauge/validate.py
    for_device) where an older record leaves ``device`` out."""
    kernels = "cpu" if record.device.split(":")[0] == "cpu" else "cuda"
    return {"device": kernels, **record.workload}


def _validated_workload(spec: Any, records: list[Any]) -> Workload | None:
    """The workload of ``spec``'s longest validated point (its device, optimizer
    implementation, b, s, dtypes as measured), or None when the file holds none."""
    ok = [r for r in records if r.model == spec.name and r.status == "ok"]
    if not ok:
        return None
    longest = max(
        ok, key=lambda r: (r.workload.get("seq_len") or 0, r.workload.get("batch_size") or 0)
    )
    known = {k: v for k, v in _recorded(longest).items() if k in Workload.model_fields}
    # every field stated, as validate measured it: the Workload's defaults, never the
    # model's usual settings (tgauge/validate.py validate_point)
    return Workload.model_validate(Workload.model_validate(known).model_dump())


def _model_section(
    model: str, workload: Workload, seq_lens: str, device: str | None, records: list[Any]
) -> Any:
    from estimator.estimate import estimate
    from estimator.plan.grid import parse_values
    from estimator.spec import context_limit
    from tgauge.loading import load_spec
    from tgauge.report import chartdata as cd
    from tgauge.report.writers import Section, Table

    spec = load_spec(model)
    validated = None if device is not None else _validated_workload(spec, records)
    stated: list[str] = []
    if validated is not None and validated.mode == workload.mode:
        workload = validated  # the sections then agree: the same run, sized and measured
        stated.append(
            f"Sized for the validated workload of {spec.name} (its longest point, as measured "
            f"below); `tgauge report --device cuda` sizes the --mode / -b / -s given instead."
        )
    elif validated is not None:
        stated.append(
            f"Sized for --mode {workload.mode} as given, not the validated {validated.mode} "
            f"workload below (on {validated.device}): the two sections describe different runs."
        )
    elif device is not None:
        workload = workload.replace(device=device)
    est = estimate(spec, workload)
    workload = est.workload  # the model's usual settings filled, the optimizer impl resolved
    limit = context_limit(spec, workload)
    values = parse_values(seq_lens)
    if len(values) > MAX_CHART_POINTS or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise UserError(
            f"--seq-lens={seq_lens!r} is invalid: at most {MAX_CHART_POINTS} integers > 0 "
            "(e.g. 128..8192 doubles)"
        )
    xs = [int(s) for s in values if limit is None or int(s) <= limit]
    if not xs and not spec.is_patch_input:
        raise UserError(
            f"--seq-lens={seq_lens!r} is invalid for {spec.name}: every value is past its "
            f"max_seq_len={limit} learned positions"
        )
    dropped = [s for s in values if s not in xs]
    paragraphs = []
    if dropped and not spec.is_patch_input:
        paragraphs.append(
            f"Charts stop at s={max(xs)}: {spec.name} has learned positions for at most "
            f"{limit} tokens (left out: {', '.join(map(str, dropped))})."
        )
        note(paragraphs[-1])
    # decode charts the step it repeats as train (prefill for int weights, which cannot train)
    chart_mode = "prefill" if workload.dtype in ("int8", "int4") else "train"
    train_like = workload.replace(mode=chart_mode) if workload.mode == "decode" else workload
    charts = (
        []
        if spec.is_patch_input
        else [
            cd.memory_breakdown_data(spec, train_like, xs),
            *cd.scaling_data(spec, train_like, xs),
        ]
    )
    if workload.mode == "decode":
        charts += [cd.kv_growth_data(spec, workload), cd.decode_cost_data(spec, workload)]
    from tgauge.format import term_label
    from tgauge.peak_view import peak_rows

    names = set(est.memory.terms)
    rows = [
        [term_label(k, names), str(v), human_bytes(v)]
        for k, v in sorted(est.memory.terms.items(), key=lambda kv: -kv[1])
    ]
    peak, phase = est.peak_memory_bytes, est.peak_phase
    live = peak_rows(spec, workload, est.memory.terms, peak, phase)
    live_rows = [[k, str(v), human_bytes(v)] for k, v in live] + [
        ["peak", str(peak), human_bytes(peak)]
    ]
    summary = (
        f"{spec.name}: {est.params.total:,} parameters; {describe_workload(spec, workload)}; "
        f"device {workload.device}{_optimizer_text(workload)}: peak {human_bytes(peak)} "
        f"({phase}), {human_flops(est.flops.total)} per step."
    )
    return Section(
        heading=spec.name,
        paragraphs=[summary, *stated, *paragraphs],
        tables=[
            Table(columns=[f"live at the peak ({phase})", "bytes", "size"], rows=live_rows),
            Table(
                columns=["memory term (every term; not all live at once)", "bytes", "size"],
                rows=rows,
            ),
        ],
        charts=charts,
    )


def _compare_section(models: str, seq_lens: str, batch: int) -> Any:
    """tgauge/report/compare_section.py for ``--compare`` (names checked by compare())."""
    from tgauge.report.compare_section import DEFAULT_MODELS, compare_section

    names = [m.strip() for m in models.split(",") if m.strip()]
    if names == ["default"]:
        names = list(DEFAULT_MODELS)
    try:
        lens = [int(v) for v in seq_lens.split(",") if v.strip()]
    except ValueError:
        lens = []
    if not names or not lens or any(v <= 0 for v in lens):
        raise UserError(
            f"--compare={models!r} --compare-seq-lens={seq_lens!r} is invalid: give presets "
            "and positive integers separated by commas, e.g. --compare elmo,gpt2-small "
            "--compare-seq-lens 128,512"
        )
    return compare_section(names, lens, batch)


def _optimizer_text(w: Workload) -> str:
    """', optimizer adamw (foreach step)' in training, else ''."""
    if w.mode != "train" or w.optimizer == "none":
        return ""
    return f", optimizer {w.optimizer} ({w.optimizer_impl} step)"


def _sweep_section(path: Path) -> Any:
    from tgauge.report.writers import Section, Table

    doc = _read_sweep(path)
    points, fields = doc["points"], doc["fields"]
    base = doc["base_workload"]
    if base is None:
        raise UserError(f"{path} has no base_workload: write it again with `tgauge sweep --out`")
    cols = [*fields, "peak_memory_bytes", "flops", "fits", "error"]
    rows = [[_cell(p.get(c), c) for c in cols] for p in points]
    base = {k: "(varied)" if k in fields else v for k, v in base.items()}
    usable = doc.get("usable_bytes")
    budget = f"; fits against {human_bytes(usable)} usable" if usable else ""
    return Section(
        heading=f"Sweep of {doc['model']} ({len(points)} points)",
        paragraphs=[
            f"Varied: {', '.join(fields)}. Every other setting: {_workload_summary(base)}; "
            + ", ".join(
                f"{k}={base.get(k)}" for k in _STATED if f"{k}=" not in _workload_summary(base)
            )
            + f"{budget}."
        ],
        tables=[Table(columns=[_header(c) for c in cols], rows=rows)],
    )


def _header(column: str) -> str:
    return (
        column.removesuffix("_bytes") + " (bytes, binary units)"
        if column.endswith("_bytes")
        else column
    )


def _read_sweep(path: Path) -> dict[str, Any]:
    """sweep.json checked for shape: fields (names), points (objects), a number or null in
    each byte / FLOP column, true / false / null in fits; UserError naming the file."""
    from estimator.spec.files import MAX_DATA_BYTES, parse_json, read_text, short_repr

    doc = parse_json(read_text(path, MAX_DATA_BYTES), str(path))

    def bad(why: str) -> UserError:
        return UserError(f"{path} is not a sweep.json of `tgauge sweep --out`: {why}")

    if not isinstance(doc, dict) or "points" not in doc or "fields" not in doc:
        raise bad("it needs an object with 'fields' and 'points'")
    fields, points = doc["fields"], doc["points"]
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise bad(f"fields={short_repr(fields)} must be a list of names")
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise bad(f"points={short_repr(points)} must be a list of objects")
    for number, point in enumerate(points):
        for column, value in point.items():
            numeric = column.endswith("_bytes") or column == "flops"
            if numeric and not (value is None or (type(value) is int)):
                raise bad(f"points[{number}].{column}={short_repr(value)} must be an integer")
            if column == "fits" and not (value is None or isinstance(value, bool)):
                raise bad(f"points[{number}].fits={short_repr(value)} must be true or false")
            if isinstance(value, (list, dict)):
                raise bad(f"points[{number}].{column} must be a number or a word")
    base, usable = doc.get("base_workload"), doc.get("usable_bytes")
    if base is not None and not (
        isinstance(base, dict) and all(not isinstance(v, (list, dict)) for v in base.values())
    ):
        raise bad(f"base_workload={short_repr(base)} must be an object of plain values")
    if usable is not None and type(usable) is not int:
        raise bad(f"usable_bytes={short_repr(usable)} must be an integer")
    model = doc.get("model", "?")
    return {
        "model": model if isinstance(model, str) else "?",
        "fields": fields,
        "points": points,
        "base_workload": base,
        "usable_bytes": usable,
    }


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column.endswith("_bytes"):
        return human_bytes(value)
    if column == "flops":
        return human_flops(value)
    return str(value)


def _read_validation(path: Path) -> list[Any]:
    """The records of a validation file, its notes shown; UserError when it holds none."""
    from tgauge.report.record_checks import check_records
    from tgauge.report.validation import load_validation

    notes: list[str] = []
    records = check_records(load_validation(path, notes), path, notes)
    for line in notes:
        note(line)
    if not records:
        raise UserError(
            f"{path} holds no validation records a report can draw (run `tgauge validate --out`)"
        )
    return records


def _validation_section(path: Path, records: list[Any]) -> Any:
    from collections import Counter

    from tgauge.report.chartdata import parity_data, validation_lines_data
    from tgauge.report.writers import Section, Table

    verdicts = Counter(row.verdict for r in records for row in r.rows)
    status = Counter(r.status for r in records)
    rows = [
        [
            r.model,
            r.device,
            _workload_summary(_recorded(r)),
            r.status,
            ", ".join(f"{k} {v}" for k, v in sorted(Counter(x.verdict for x in r.rows).items())),
        ]
        for r in records
    ]
    charts = [parity_data(records)]
    for unit in ("bytes", "flops"):
        charts += validation_lines_data(records, unit)
    return Section(
        heading="Validation: predicted vs measured",
        paragraphs=[
            f"{len(records)} points ({', '.join(f'{k} {v}' for k, v in status.items())});"
            f" rows: {', '.join(f'{k} {v}' for k, v in sorted(verdicts.items()))}."
        ],
        tables=[Table(columns=["model", "device", "workload", "status", "verdicts"], rows=rows)],
        charts=charts,
    )
