"""`tgauge fit MODEL --gpu NAME`: does it fit, largest batch, longest context, fewest GPUs."""

from typing import Annotated, Any

import typer
from rich.markup import escape

from estimator.spec import Workload
from tgauge.app import UserError, app, console, note, print_json, print_table, user_errors
from tgauge.format import (
    defaults_note,
    describe_workload,
    human_bytes,
    human_flops,
    human_seconds,
    implementation_label,
)
from tgauge.options import Impl, Json, Wrap, with_workload
from tgauge.peak_view import peak_table

_PLAN = "Plan"


@app.command(
    "fit",
    epilog="Example: tgauge fit llama-3-8b --gpu h100-sxm --gpus 8 --zero 3 --dtype bf16 -s 4096",
)
@user_errors
@with_workload(preset_defaults=True)
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
            "--zero",
            help="1: ZeroRedundancyOptimizer; 2 / 3: FSDP2 reshard_after_forward False / True",
            min=0,
            max=3,
            rich_help_panel=_PLAN,
        ),
    ] = 0,
    tp: Annotated[
        int, typer.Option("--tp", help="tensor-parallel degree", min=1, rich_help_panel=_PLAN)
    ] = 1,
    sp: Annotated[
        bool,
        typer.Option("--sp", help="sequence parallel norms with --tp", rich_help_panel=_PLAN),
    ] = False,
    wrap: Annotated[
        Wrap,
        typer.Option(
            "--wrap",
            help="with --zero 2|3: the FSDP2 units: blocks (each block and the root) or "
            "torchtitan (its apply_fsdp: embedding, blocks, norm + head, root)",
            rich_help_panel=_PLAN,
        ),
    ] = Wrap.blocks,
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
    block_size: Annotated[
        int,
        typer.Option(
            "--block-size",
            help="decode: tokens per KV-cache block of a paged server (vLLM's default 16)",
            min=1,
            rich_help_panel=_PLAN,
        ),
    ] = 16,
    gpu_memory_utilization: Annotated[
        float,
        typer.Option(
            "--gpu-memory-utilization",
            help="decode: fraction of GPU memory a paged server uses (vLLM's default 0.9)",
            min=0.01,
            max=1.0,
            rich_help_panel=_PLAN,
        ),
    ] = 0.9,
    impl: Impl = None,
    *,
    workload: Workload,
    defaults_applied: dict[str, object],
    as_json: Json = False,
) -> None:
    """Will MODEL run on GPU? Headroom, largest batch, longest context, fewest GPUs; speed
    (per GPU and for all GPUs); in decode, how many sequences a paged-KV server holds."""
    from estimator.estimate import estimate
    from estimator.plan.capacity import Sharding, plan
    from estimator.plan.hardware import (
        Efficiency,
        Overheads,
        get_gpu,
        step_times,
        training_time_s,
        unusable_terms,
        usable_bytes,
    )
    from estimator.plan.serving import serving_capacity, throughput
    from tgauge.loading import load_spec

    if tokens is not None and not workload.is_training:
        raise UserError(f"--tokens times training; --mode {workload.mode} would ignore it")
    spec = load_spec(model, impl)
    if (
        workload.mode == "decode"
        and "engine" not in workload.model_fields_set
        and spec.arch == "decoder"
        and spec.lm_head
    ):  # issue 19: a static batch is served as generate() serves it (no [b, P, V] logits)
        workload = workload.replace(engine="hf-generate")
        note(
            "decode: the static batch is served by transformers' generate() (--engine "
            "hf-generate: logits of the last prompt position only); --engine forward for a "
            "plain model call"
        )
    device = get_gpu(gpu)
    overheads = Overheads(
        cuda_context_bytes=context_mib * 2**20, allocator_reserve_fraction=reserve
    )
    usable = usable_bytes(device, overheads)
    if sp and tp == 1:
        raise UserError("--sp shards the norms over the --tp ranks: it needs --tp > 1")
    if wrap != Wrap.blocks and zero < 2:
        raise UserError(f"--wrap {wrap.value} names FSDP2 units: give --zero 2 or 3")
    sharding = Sharding(n_gpus=gpus, zero=zero, tp=tp, sp=sp, wrap=wrap.value)  # type: ignore[arg-type]
    if zero and not workload.is_training:
        note(
            f"--zero {zero} shards training state (optimizer, gradients, FSDP parameters); "
            f"--mode {workload.mode} ignores it (--tp splits an inference model)"
        )
    elif zero and sharding.dp == 1:
        note(
            f"--zero {zero} with one data-parallel GPU shards nothing (ZeRO splits optimizer "
            "state, gradients and weights across the --gpus / --tp data-parallel ranks)"
        )
    result = plan(spec, workload, usable, device.name, sharding)
    efficiency = Efficiency(mfu=mfu, bw_util=bw_util)
    from estimator.plan.capacity import rank_estimate

    single = estimate(spec, workload)
    rank = rank_estimate(single, sharding)  # training over several GPUs: one rank's step
    if rank is not None and zero >= 2 and wrap == Wrap.blocks:
        _note_other_wrap(single, sharding, result.fit.peak_bytes)
    times = step_times(rank or single, device, efficiency)
    speed = throughput(times, gpus, tp, per_rank=rank is not None)
    train_s = (
        training_time_s(times, tokens, sharding.dp) if tokens and workload.is_training else None
    )
    serving = None
    if workload.mode == "decode" and workload.kv_cache and spec.arch == "decoder":
        serving = serving_capacity(
            spec,
            workload,
            device,
            block_size=block_size,
            gpu_memory_utilization=gpu_memory_utilization,
            n_gpus=gpus,
            tp=tp,
            overheads=overheads,
            efficiency=efficiency,
        )
    if as_json:
        print_json(
            {
                "plan": result.model_dump(mode="json"),
                "implementation": implementation_label(spec),
                "defaults_applied": defaults_applied,
                "unusable_bytes": unusable_terms(device, overheads),
                "times": times.model_dump(mode="json") | {"tokens_per_s": times.tokens_per_s},
                "throughput": speed.model_dump(mode="json"),
                "serving": None if serving is None else serving.model_dump(mode="json"),
                "training_time_s": train_s,
            }
        )
        return
    applied_line = defaults_note(model, defaults_applied)
    if applied_line:
        console.print(f"[dim]{escape(applied_line)}[/]", highlight=False)
    _print(result, spec, device, unusable_terms(device, overheads), times, train_s, tokens)
    _print_speed(times, speed)
    if serving is not None:
        _print_serving(serving)


def _note_other_wrap(single: Any, sharding: Any, peak: int) -> None:
    """A note when torchtitan's FSDP2 units (--wrap torchtitan) lower rank 0's peak."""
    from estimator.plan.capacity import rank_estimate
    from estimator.spec.errors import UnsupportedError

    try:
        other = rank_estimate(single, sharding.model_copy(update={"wrap": "torchtitan"}))
    except UnsupportedError:  # no token embedding / final norm / head units to wrap
        return
    if other is not None and other.peak_memory_bytes < peak:
        note(
            f"--wrap torchtitan (torchtitan's apply_fsdp units: the embedding resharded after "
            f"forward, the norm + head its own unit) peaks at "
            f"{human_bytes(other.peak_memory_bytes)} ({other.peak_phase}) per GPU"
        )


def _print(
    result: Any,
    spec: Any,
    device: Any,
    unusable: dict[str, int],
    times: Any,
    train_s: float | None,
    tokens: int | None,
) -> None:
    from rich.table import Table

    f, sh = result.fit, result.sharding
    layout = f"zero={sh.zero}, tp={sh.tp}" + (", sp" if sh.sp else "")
    if sh.wrap != "blocks":
        layout += f", wrap={sh.wrap}"
    verdict = "[green]fits[/]" if f.fits else "[red]does not fit[/]"
    console.print(
        f"{escape(result.model)} ({describe_workload(spec, result.workload)}) on {sh.n_gpus} x "
        f"{escape(device.name)} ({layout}): {verdict}; peak "
        f"{human_bytes(f.peak_bytes)} ({f.peak_phase}) of {human_bytes(f.usable_bytes)} usable, "
        f"headroom {human_bytes(f.headroom_bytes)}"
    )
    mem = peak_table(
        spec, result.workload, f.terms, f.peak_bytes, f.peak_phase, "Memory per GPU", f.parts
    )
    mem.caption += "; usable = total - " + ", ".join(
        f"{k} {human_bytes(v)}" for k, v in unusable.items()
    )
    print_table(mem)
    ans = Table(title="Limits (exact search: every size up to the answer fits, the next does not)")
    cols = ("question", "answer", "next size (does not fit)", "its peak", "grew most / capped by")
    for col in cols:
        ans.add_column(col, justify="left" if col in ("question", cols[-1]) else "right")
    limits = [
        ("largest batch_size", result.max_batch, "one more"),
        ("longest context", result.max_context, "one more"),
        ("fewest GPUs", result.fewest_gpus, "one fewer"),
    ]
    for label, lim, step in limits:
        if lim is None:
            ans.add_row(label, "n/a", "-", "-", "-")
            continue
        answer = "does not fit" if lim.max_value is None else str(lim.max_value)
        if lim.strategy and lim.max_value is not None:
            answer += f" ({lim.strategy})"
        nxt = lim.next_fit.peak_bytes if lim.next_fit else None
        nxt_value = f"{lim.next_value} ({step})" if lim.next_value and lim.max_value else "-"
        why = lim.grew_most or lim.capped_by or "-"
        if lim.grew_most and lim.next_fit is not None:  # where the next size's peak falls
            why += f" (peak in the {lim.next_fit.peak_phase})"
        ans.add_row(label, answer, nxt_value, human_bytes(nxt), why)
    console.print(ans)
    for label, lim, _ in limits:
        if lim is not None and lim.longest_fitting:
            console.print(
                f"{label}: the peak is not monotone (chunked attention): "
                f"{lim.longest_fitting} fits, though {lim.next_value} does not; "
                f"between them some sizes fit and some do not"
            )
    if train_s is not None:
        console.print(f"training on {tokens:,} tokens: {human_seconds(train_s)}")


def _print_speed(times: Any, speed: Any) -> None:
    """Roofline step, latency and tokens/s, each labelled per GPU or for all GPUs."""
    from rich.table import Table

    step = times.step
    n = speed.n_gpus
    t = Table(
        title=f"Speed (roofline, {step.math_dtype} math on {times.gpu})",
        caption="per GPU: one GPU's share; all GPUs: x the GPU count. Training on several "
        "GPUs: one rank's step, its collectives timed as rings at the GPU's link bandwidth "
        "(the network's between nodes), data-parallel ones overlapped with compute; "
        "inference: tensor parallel as an ideal split, communication not modelled",
    )
    t.add_column("quantity")
    t.add_column("value", justify="right")
    what = f"{human_flops(step.flops)}, {human_bytes(step.bytes_moved)} moved, {step.bound}-bound"
    if speed.mode == "decode":
        t.add_row("time to first token (prefill of the batch)", human_seconds(speed.ttft_s))
        t.add_row("  prefill work", what)
        last = times.decode_steps[-1]
        t.add_row("time per output token, first step", human_seconds(speed.tpot_first_s))
        t.add_row(
            f"time per output token, last step ({len(times.decode_steps)})",
            f"{human_seconds(speed.tpot_last_s)} ({last.bound}-bound)",
        )
        t.add_row(
            "generated tokens/s per GPU (prefill excluded)", _rate(speed.tokens_per_s_per_gpu)
        )
        t.add_row(f"generated tokens/s for all GPUs ({n})", _rate(speed.tokens_per_s_all_gpus))
        t.add_row(
            "end-to-end tokens/s per GPU (prefill included)",
            _rate(speed.end_to_end_tokens_per_s_per_gpu),
        )
    else:
        t.add_row(f"{speed.mode} step", f"{human_seconds(speed.step_s)} ({what})")
        if step.overlapped_comm_s or step.serial_comm_s:
            t.add_row(
                "  collectives",
                f"{human_seconds(step.overlapped_comm_s)} data parallel (overlapped) + "
                f"{human_seconds(step.serial_comm_s)} tensor parallel (serial)",
            )
        t.add_row("tokens/s per GPU", _rate(speed.tokens_per_s_per_gpu))
        t.add_row(f"tokens/s for all GPUs ({n})", _rate(speed.tokens_per_s_all_gpus))
    console.print(t)


def _rate(tokens_per_s: float | None) -> str:
    return "-" if tokens_per_s is None else f"{tokens_per_s:,.1f}"


def _print_serving(c: Any) -> None:
    """How many sequences a paged-KV server holds, and the decode speed at that concurrency."""
    from rich.table import Table

    t = Table(
        title=f"Serving: paged KV cache, blocks of {c.block_size} tokens, "
        f"{c.gpu_memory_utilization:.0%} of GPU memory (vLLM's scheme)",
        caption="override with --block-size and --gpu-memory-utilization; every sequence "
        "counted at its full prompt + output length",
    )
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("sequence length (prompt + output)", f"{c.sequence_tokens:,} tokens")
    t.add_row("blocks per sequence", f"{c.blocks_per_sequence:,}")
    t.add_row("one block (all layers, K + V, per GPU)", human_bytes(c.block_bytes))
    t.add_row("memory budget per GPU", human_bytes(c.budget_bytes))
    t.add_row("  minus weights, activation peak, CUDA context", human_bytes(c.reserved_bytes))
    t.add_row("  = KV cache per GPU", f"{human_bytes(c.kv_cache_bytes)} ({c.n_blocks:,} blocks)")
    t.add_row(
        "[bold]concurrent sequences per replica[/]", f"[bold]{c.max_concurrent_sequences:,}[/]"
    )
    t.add_row(
        f"concurrent sequences for all GPUs ({c.n_gpus})",
        f"{c.max_concurrent_sequences_all_gpus:,}",
    )
    t.add_row("time to first token, one lone prompt", human_seconds(c.ttft_one_sequence_s))
    s = c.at_max_concurrency
    if s is not None:
        t.add_row(
            "time per output token at that concurrency, first step", human_seconds(s.tpot_first_s)
        )
        t.add_row(
            "time per output token at that concurrency, last step", human_seconds(s.tpot_last_s)
        )
        t.add_row(
            "[bold]decode tokens/s per GPU at that concurrency[/]",
            f"[bold]{_rate(s.tokens_per_s_per_gpu)}[/]",
        )
        t.add_row(f"decode tokens/s for all GPUs ({c.n_gpus})", _rate(s.tokens_per_s_all_gpus))
    console.print(t)
