"""`tgauge fit MODEL --gpu NAME`: does it fit, largest batch, longest context, fewest GPUs."""

from typing import Annotated, Any

import typer

from estimator.spec import Workload
from tgauge.app import app, console, print_json, user_errors
from tgauge.format import human_bytes, human_flops, human_seconds
from tgauge.options import Json, with_workload

_PLAN = "Plan"


@app.command("fit")
@user_errors
@with_workload
def fit_command(
    model: Annotated[str, typer.Argument(help="preset name, spec file or HF config.json")],
    gpu: Annotated[
        str,
        typer.Option(
            "--gpu",
            help="GPU preset (h100-sxm, a100-80gb, ...) or a JSON file",
            rich_help_panel=_PLAN,
        ),
    ] = "h100-sxm",
    gpus: Annotated[
        int, typer.Option("--gpus", help="GPUs (dp x tp)", min=1, rich_help_panel=_PLAN)
    ] = 1,
    zero: Annotated[
        int,
        typer.Option(
            "--zero", help="ZeRO stage 0-3 (3 = FSDP)", min=0, max=3, rich_help_panel=_PLAN
        ),
    ] = 0,
    tp: Annotated[
        int, typer.Option("--tp", help="tensor-parallel degree", min=1, rich_help_panel=_PLAN)
    ] = 1,
    mfu: Annotated[
        float, typer.Option("--mfu", help="fraction of peak FLOP/s reached", rich_help_panel=_PLAN)
    ] = 0.4,
    bw_util: Annotated[
        float, typer.Option("--bw-util", help="fraction of peak bandwidth", rich_help_panel=_PLAN)
    ] = 0.8,
    context_mib: Annotated[
        int, typer.Option("--context-mib", help="CUDA context + driver", rich_help_panel=_PLAN)
    ] = 500,
    reserve: Annotated[
        float, typer.Option("--reserve", help="allocator reserve fraction", rich_help_panel=_PLAN)
    ] = 0.05,
    tokens: Annotated[
        int | None,
        typer.Option("--tokens", help="train: token budget to time", min=1, rich_help_panel=_PLAN),
    ] = None,
    *,
    workload: Workload,
    as_json: Json = False,
) -> None:
    """Will MODEL run on GPU? Headroom, largest batch, longest context, fewest GPUs."""
    from estimator.estimate import estimate
    from estimator.hardware import (
        Efficiency,
        Overheads,
        get_gpu,
        step_times,
        training_time_s,
        unusable_terms,
        usable_bytes,
    )
    from estimator.plan import Sharding, plan
    from tgauge.loading import load_spec

    spec = load_spec(model)
    device = get_gpu(gpu)
    overheads = Overheads(
        cuda_context_bytes=context_mib * 2**20, allocator_reserve_fraction=reserve
    )
    usable = usable_bytes(device, overheads)
    sharding = Sharding(n_gpus=gpus, zero=zero, tp=tp)  # type: ignore[arg-type]
    result = plan(spec, workload, usable, device.name, sharding)
    times = step_times(estimate(spec, workload), device, Efficiency(mfu=mfu, bw_util=bw_util))
    train_s = (
        training_time_s(times, tokens, sharding.dp) if tokens and workload.is_training else None
    )
    if as_json:
        print_json(
            {
                "plan": result.model_dump(mode="json"),
                "unusable_bytes": unusable_terms(device, overheads),
                "times": times.model_dump(mode="json") | {"tokens_per_s": times.tokens_per_s},
                "training_time_s": train_s,
            }
        )
        return
    _print(result, device, unusable_terms(device, overheads), times, train_s, tokens)


def _print(
    result: Any,
    device: Any,
    unusable: dict[str, int],
    times: Any,
    train_s: float | None,
    tokens: int | None,
) -> None:
    from rich.table import Table

    f, sh = result.fit, result.sharding
    verdict = "[green]fits[/]" if f.fits else "[red]does not fit[/]"
    console.print(
        f"{result.model} on {sh.n_gpus} x {device.name} (zero={sh.zero}, tp={sh.tp}): "
        f"{verdict}; peak {human_bytes(f.peak_bytes)} ({f.peak_phase}) of "
        f"{human_bytes(f.usable_bytes)} usable, headroom {human_bytes(f.headroom_bytes)}"
    )
    mem = Table(
        title="Memory per GPU",
        caption="usable = total - "
        + ", ".join(f"{k} {human_bytes(v)}" for k, v in unusable.items()),
    )
    mem.add_column("term")
    mem.add_column("bytes", justify="right")
    mem.add_column("", justify="right")
    for name, value in sorted(f.terms.items(), key=lambda kv: -kv[1]):
        mem.add_row(name, str(value), human_bytes(value))
    console.print(mem)
    ans = Table(title="Limits (exact search: every size up to the answer fits, the next does not)")
    for col in ("question", "answer", "next size up", "its peak", "grew most"):
        ans.add_column(col, justify="left" if col in ("question", "grew most") else "right")
    limits = [
        ("largest batch_size", result.max_batch),
        ("longest context", result.max_context),
        ("fewest GPUs", result.fewest_gpus),
    ]
    for label, lim in limits:
        if lim is None:
            ans.add_row(label, "n/a", "-", "-", "-")
            continue
        answer = "does not fit" if lim.max_value is None else str(lim.max_value)
        nxt = lim.next_fit.peak_bytes if lim.next_fit else None
        ans.add_row(
            label,
            answer,
            str(lim.next_value or "-"),
            human_bytes(nxt),
            lim.grew_most or lim.capped_by or "-",
        )
    console.print(ans)
    for label, lim in limits:
        if lim is not None and lim.longest_fitting:
            console.print(
                f"{label}: the peak is not monotone (chunked attention): "
                f"{lim.longest_fitting} fits, though {lim.next_value} does not; "
                f"between them some sizes fit and some do not"
            )
    step = times.step
    console.print(
        f"roofline ({step.math_dtype}): {times.mode} step {human_seconds(step.time_s)} "
        f"({step.bound}-bound: {human_flops(step.flops)}, "
        f"{human_bytes(step.bytes_moved)} moved); total {human_seconds(times.total_s)}, "
        f"{times.tokens_per_s:,.0f} tokens/s"
    )
    if train_s is not None:
        console.print(f"training on {tokens:,} tokens: {human_seconds(train_s)}")
