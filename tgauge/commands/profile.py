"""`tgauge profile MODEL`: measure a model (no estimate) on cpu, cuda or meta.

MODEL is a Hugging Face config.json (built with random init via transformers), or a preset /
spec file (built as our reference model). torch is imported inside the command only.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape

from estimator.spec import Workload
from tgauge.app import (
    UserError,
    app,
    console,
    print_json,
    progress_display,
    require,
    user_errors,
)
from tgauge.options import Impl, with_workload
from tgauge.targets import Target, load_target


def run_profile(
    target: Target,
    workload: Workload,
    device: str,
    repeats: int,
    tick: Callable[[Any], None] | None = None,
    task: Any = None,
) -> Any:
    """The workload's entry point of the profiler on ``target``; decode calls ``tick(task)``
    after the prefill and after each step (outside the timed region)."""
    from profiler.run import profile_decode, profile_forward, profile_train_step

    if workload.mode == "train":
        from reference_model.train import autocast_dtype

        return profile_train_step(
            target.model,
            target.inputs,
            target.optimizer,
            loss_fn=target.loss_fn,
            repeats=repeats,
            autocast=autocast_dtype(workload),
        )
    if workload.mode == "prefill":
        return profile_forward(target.model, target.inputs, repeats=repeats)
    dec = target.decoder

    def cache_bytes() -> int:
        n = dec.cache_bytes()
        if tick is not None:
            tick(task)
        return n

    return profile_decode(
        dec.step, workload.new_tokens, cache_bytes, device=device, prefill_fn=dec.prefill
    )


@app.command("profile", epilog="Example: tgauge profile path/to/config.json --mode prefill -s 128")
@user_errors
@with_workload
def profile_command(
    model: Annotated[str, typer.Argument(help="HF config.json, preset name or spec file")],
    *,
    workload: Workload,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | meta")] = "cpu",
    target_device: Annotated[
        str,
        typer.Option(
            "--target-device",
            help="meta: the device whose optimizer a dry run builds (torch's default impl)",
        ),
    ] = "cuda",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="timed repeats")] = 3,
    impl: Impl = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Measure MODEL (parameters, saved activations, live memory, FLOPs, time, KV cache)."""
    from tgauge.devices import check_device
    from tgauge.targets import refuse_quantized

    refuse_quantized(workload, "tgauge profile")
    if device not in ("cpu", "cuda", "meta"):
        check_device(device, ("cpu", "cuda", "meta"))  # the one-line refusal, before torch
    if target_device not in ("cpu", "cuda"):
        raise UserError(f"--target-device={target_device!r} is invalid: use cpu or cuda")
    # the kernels the run is for: the device itself, or a meta dry run's target
    workload = workload.model_copy(update={"device": target_device if device == "meta" else device})
    if workload.mode != "train":  # issue 19: plain model calls (the title says so);
        # tgauge validate --engine hf-generate measures transformers' generate()
        workload = workload.model_copy(update={"engine": "forward"})
    with progress_display() as progress, _allocation_errors(device):
        # shown from the start: importing torch alone takes seconds
        task = progress.add_task("importing torch", total=None)
        require("torch", "tgauge profile")
        check_device(device, ("cpu", "cuda", "meta"))  # cuda: present here (asks torch)
        progress.update(task, description=f"building {escape(model)} on {escape(device)}")
        target = load_target(model, workload, device, impl)
        decoding = target.decoder is not None and workload.mode == "decode"
        steps = "prefill and each step" if decoding else f"1 warm-up + {repeats} timed runs"
        progress.update(
            task,
            description=f"measuring {workload.mode} of {escape(model)} on {escape(device)} "
            f"(live memory, saved tensors, FLOPs, {steps})",
            total=workload.new_tokens + 1 if decoding else None,  # prefill, then each step
        )
        result = run_profile(target, workload, device, repeats, tick=progress.advance, task=task)
    if as_json:  # the measurement, and which implementation was measured
        print_json(result.model_dump(mode="json") | {"implementation": target.implementation})
    else:
        render(model, workload, result, target.implementation)


@contextmanager
def _allocation_errors(device: str) -> Iterator[None]:
    """torch's out-of-memory errors as one line: the workload is too big for ``device``."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        text = str(exc)
        if not isinstance(exc, MemoryError) and not any(
            s in text.lower() for s in ("out of memory", "can't allocate memory")
        ):
            raise
        first = text.splitlines()[0] if text else "out of memory"
        raise UserError(
            f"out of memory on {device}: lower --batch-size or --seq-len ({first[:160]})"
        ) from None


def _measured(m: Any, fmt: Any) -> str:
    return fmt(m.value) if m.value is not None else f"[dim]{m.note}[/]"


def render(model: str, workload: Workload, result: Any, implementation: str = "reference") -> None:
    """Rich tables of a TrainProfile / ForwardProfile / DecodeProfile."""
    from rich.table import Table

    from tgauge.format import human_bytes, human_flops, human_seconds, precision_label

    w = workload
    own = implementation.startswith("user ")  # file.py:factory: its attention is its own code
    attention = "the module's own attention" if own else f"attention {w.attention_impl}"
    dropout = f", dropout {w.dropout:g}" if w.mode == "train" and w.dropout else ""
    title = (
        f"tgauge profile {escape(model)} ({w.mode}, b={w.batch_size}, s={w.seq_len}, "
        f"{precision_label(w)}, {attention}{dropout}, {result.device}, "
        f"implementation {escape(implementation)}"
        + (", engine forward)" if w.mode != "train" else ")")
    )
    if not hasattr(result, "n_params"):  # DecodeProfile
        table = Table("after", "KV cache", title=title)
        for i, n in enumerate(result.cache_bytes):
            table.add_row("prefill" if i == 0 else f"step {i}", human_bytes(n))
        console.print(table)
        console.print(f"step time: {_measured(result.step_time, _timing(human_seconds))}")
        return
    flops = result.flops.flops
    saved = getattr(result, "saved", None)
    names = sorted(
        set(result.n_params.terms)
        | {k.partition(".")[2] for k in flops.terms}
        | set(saved.activations.terms if saved else ())
    )
    terms = Table("term", "params", "activations", "forward", "backward", title=title)
    for name in names:
        act = saved.activations.terms.get(name) if saved else None
        terms.add_row(
            name,
            f"{result.n_params.terms.get(name, 0):,}",
            human_bytes(act),
            human_flops(flops.terms.get(f"forward.{name}")),
            human_flops(flops.terms.get(f"backward.{name}")),
        )
    console.print(terms)
    console.print(_summary(result, human_bytes, human_flops, human_seconds))


def _timing(human_seconds: Any) -> Any:
    return lambda t: (
        f"{human_seconds(t.median_s)} median ({human_seconds(t.min_s)} - "
        f"{human_seconds(t.max_s)}, {t.repeats} runs, {t.clock})"
    )


def _summary(result: Any, human_bytes: Any, human_flops: Any, human_seconds: Any) -> Any:
    from rich.table import Table

    table = Table("quantity", "measured", title="Summary")
    table.add_row("parameters", f"{result.n_params.total:,}")
    table.add_row("weights", human_bytes(result.weights.total))
    if hasattr(result, "gradients"):
        table.add_row("gradients", human_bytes(result.gradients.total))
        for state, n in result.optimizer.terms.items():
            table.add_row(f"optimizer.{state}", human_bytes(n))
        table.add_row("activations saved", human_bytes(result.saved.activations.total))
    peak = result.live_peak
    table.add_row("live tensors peak", f"{human_bytes(peak.peak_bytes)} in {peak.phase}")
    cuda = result.cuda
    table.add_row("CUDA max allocated", _measured(cuda.max_allocated_bytes, human_bytes))
    table.add_row("CUDA max reserved", _measured(cuda.max_reserved_bytes, human_bytes))
    table.add_row("NVML device used", _measured(cuda.nvml_used_bytes, human_bytes))
    f = result.flops.flops
    table.add_row("FLOPs forward", human_flops(f.group("forward")))
    if f.group("backward") or f.group("recompute"):
        table.add_row("FLOPs backward", human_flops(f.group("backward")))
        table.add_row("FLOPs recompute", human_flops(f.group("recompute")))
    if result.flops.uncounted_ops:
        table.add_row("not counted (no formula)", ", ".join(result.flops.uncounted_ops))
    fv = result.fvcore.flops
    fv_text = _measured(fv, lambda b: human_flops(b.total))
    table.add_row("fvcore forward FLOPs", fv_text)
    table.add_row("time per step", _measured(result.time, _timing(human_seconds)))
    return table
