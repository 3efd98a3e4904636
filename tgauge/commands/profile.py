"""`tgauge profile MODEL`: measure a model (no estimate) on cpu, cuda or meta.

MODEL is a Hugging Face config.json (built with random init via transformers), or a preset /
spec file (built as our reference model). torch is imported inside the command only.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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

_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Target:
    """What to measure: a model, its forward inputs, optimizer, loss and decode hooks."""

    model: Any
    inputs: Any
    optimizer: Any = None
    loss_fn: Any = None
    decoder: Any = None  # an object with prefill(), step(i), cache_bytes()
    implementation: str = "reference"  # or "hf <transformers class>"


def _torch_dtype(workload: Workload) -> Any:
    import torch

    name = workload.dtype
    if name not in _TORCH_DTYPES:
        raise UserError(f"--dtype={name!r} cannot be profiled; use fp32, fp16 or bf16")
    return getattr(torch, _TORCH_DTYPES[name])


def make_optimizer(model: Any, workload: Workload) -> Any:
    """The workload's optimizer, built as reference_model.train builds it (optimizer_impl, or
    torch's default on the device; on meta, on the target ``workload.device``)."""
    from reference_model.train import make_optimizer as build_optimizer

    meta = next(iter(model.parameters())).device.type == "meta"
    if meta and (
        workload.optimizer in ("adafactor", "adamw-8bit") or (workload.optimizer_impl == "fused")
    ):
        impl = f" --optimizer-impl {workload.optimizer_impl}" if workload.optimizer_impl else ""
        raise UserError(
            f"--optimizer {workload.optimizer}{impl} "
            "cannot step on meta tensors (fused kernels check the device, Adafactor reads "
            "norms with .item()): profile on cpu, or use `tgauge estimate`"
        )
    try:
        return build_optimizer(model, workload, lr=1e-4)
    except ImportError as exc:
        raise UserError(
            f"--optimizer {workload.optimizer} needs {exc.name}: pip install it"
        ) from None


def hf_target(config: dict[str, Any], workload: Workload, device: str) -> Target:
    """The Hugging Face model of ``config`` (tgauge/hf_models.py: the class ``architectures``
    names, random init, never downloads), its inputs, optimizer or decoder."""
    require("transformers", "tgauge profile CONFIG.json")
    import torch

    from profiler.run import HFDecoder
    from tgauge.hf_models import build_hf_model, check_mode, hf_inputs, stand_in_loss

    built = build_hf_model(config, workload, device)
    check_mode(built, workload)
    model = built.model
    impl = f"hf {built.architecture}"
    if workload.mode == "train":
        model.train()
        target = Target(model=model, inputs=hf_inputs(built, workload, device), implementation=impl)
        target.optimizer = make_optimizer(model, workload)
        if built.task == "base":  # no loss of its own
            target.loss_fn = stand_in_loss
        return target
    model.eval()
    target = Target(model=model, inputs=hf_inputs(built, workload, device), implementation=impl)
    if workload.mode == "decode":
        # the prompt as estimator.spec.resolved_prompt_len: seq2seq starts from 1 token
        seq2seq = built.task == "seq2seq-lm"
        p = workload.prompt_len or (1 if seq2seq else workload.seq_len)
        gen = torch.Generator().manual_seed(1)
        prompt = torch.randint(0, built.config.vocab_size, (workload.batch_size, p), generator=gen)
        source = target.inputs["input_ids"] if seq2seq else None
        target.decoder = HFDecoder(model, prompt.to(device), encoder_input_ids=source)
    return target


class _ReferenceDecoder:
    """prefill / step / cache_bytes over reference_model's KVCache."""

    def __init__(self, model: Any, spec: Any, workload: Workload, device: str) -> None:
        import torch

        from estimator.spec import resolved_prompt_len
        from reference_model.cache import KVCache
        from reference_model.inputs import make_inputs

        self.model, self.spec = model, spec
        b, prompt = workload.batch_size, resolved_prompt_len(spec, workload)
        self.source = None
        if spec.arch == "encoder-decoder":
            self.source = make_inputs(spec, workload, device=device)["input_ids"]
            self.prompt = torch.zeros(b, prompt, dtype=torch.long, device=device)  # start ids
        else:
            gen = torch.Generator().manual_seed(0)
            self.prompt = torch.randint(0, spec.vocab_size, (b, prompt), generator=gen).to(device)
        self.cache = KVCache(n_layers=spec.n_decoder_layers)
        self.next_ids: Any = None

    def prefill(self) -> None:
        import torch

        with torch.no_grad():
            logits = self.model.prefill(self.prompt, self.cache, encoder_input_ids=self.source)
        self.next_ids = logits[:, -1:].argmax(-1)  # [b, 1]

    def step(self, _: int) -> None:
        import torch

        with torch.no_grad():
            logits = self.model.decode_step(self.next_ids, self.cache)
        self.next_ids = logits[:, -1:].argmax(-1)

    def cache_bytes(self) -> int:
        return int(self.cache.nbytes())


def reference_target(
    model_arg: str, workload: Workload, device: str, impl: str | None = None
) -> Target:
    """Our reference model of a preset / spec file (or, with ``impl="reference"``, of a
    config.json's spec), with reference_model's own inputs."""
    from estimator.spec import check_compatible
    from tgauge.loading import load_spec

    spec = load_spec(model_arg, impl)
    check_compatible(spec, workload)
    if device == "cpu":
        from tgauge.devices import available_bytes, check_host_memory

        check_host_memory([(spec, workload)], available_bytes("cpu"))
    try:
        from reference_model import build_model
        from reference_model.inputs import make_inputs
        from reference_model.train import objective
    except ImportError as exc:
        raise UserError(f"the reference model is not available: {exc}") from None
    model = build_model(spec, workload, device=device)
    target = Target(model=model, inputs=make_inputs(spec, workload, device=device))
    if workload.mode == "train":
        model.train()
        target.optimizer, target.loss_fn = make_optimizer(model, workload), objective
    else:
        model.eval()
        if workload.mode == "decode":
            target.decoder = _ReferenceDecoder(model, spec, workload, device)
    return target


def load_target(model_arg: str, workload: Workload, device: str, impl: str | None = None) -> Target:
    """A config.json with model_type -> Hugging Face (``impl="reference"``: our reference model
    of its spec); a preset with ``impl="hf"`` -> its twin's Hugging Face class
    (estimator/hf_twins.py); anything else -> the reference model."""
    from tgauge.loading import cached_hub_config, is_hub_id, load_model, read_mapping

    if impl == "reference":
        return reference_target(model_arg, workload, device, impl)
    path = Path(model_arg)
    if path.is_dir():
        path = path / "config.json"
    elif not path.exists() and is_hub_id(model_arg):
        path = cached_hub_config(model_arg) or path
    if path.is_file() and path.suffix.lower() == ".json":
        data = read_mapping(path)
        if "model_type" in data:
            _check_hf_limits(data, workload)
            return hf_target(data, workload, device)
    if impl == "hf":  # a preset's twin (load_model refuses a spec file or no twin)
        spec, config = load_model(model_arg, impl)
        _check_hf_limits(config, workload)
        if device == "cpu":
            from tgauge.devices import available_bytes, check_host_memory

            check_host_memory([(spec, workload)], available_bytes("cpu"))
        return hf_target(config, workload, device)
    return reference_target(model_arg, workload, device)


def _check_hf_limits(config: dict[str, Any], workload: Workload) -> None:
    """The checks `estimate` makes (config values, max positions, decode on an encoder) for a
    config tgauge reads; a model_type or field combination it does not model is left to
    transformers."""
    from estimator.hf_config import _READERS
    from estimator.spec import ModelSpec, UnsupportedError, check_compatible

    if config["model_type"] not in _READERS:
        return
    try:
        spec = ModelSpec.from_hf_config(config)
    except UnsupportedError:
        return
    check_compatible(spec, workload)


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

    require("torch", "tgauge profile")
    check_device(device, ("cpu", "cuda", "meta"))
    if target_device not in ("cpu", "cuda"):
        raise UserError(f"--target-device={target_device!r} is invalid: use cpu or cuda")
    # the kernels the run is for: the device itself, or a meta dry run's target
    workload = workload.model_copy(update={"device": target_device if device == "meta" else device})
    with progress_display() as progress, _allocation_errors(device):
        task = progress.add_task(f"building {escape(model)} on {escape(device)}", total=None)
        target = load_target(model, workload, device, impl)
        decoding = target.decoder is not None and workload.mode == "decode"
        progress.update(
            task,
            description=f"measuring {workload.mode} of {escape(model)} on {escape(device)}",
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

    title = (
        f"tgauge profile {escape(model)} ({workload.mode}, {precision_label(workload)}, "
        f"{result.device}, implementation {escape(implementation)})"
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
