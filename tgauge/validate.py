"""Validation: build the reference model, run the workload, measure it, and compare every
measured quantity with the estimator's prediction of the same name (docs/glossary.md).

One `Point` per (spec, workload): rows of predicted vs measured per term, with a verdict
against the tolerance of its quantity. Torch is imported inside the functions that run models.
"""

from __future__ import annotations

import traceback
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from estimator.spec import ModelSpec, Workload
from tgauge import __version__

Verdict = Literal["exact", "within", "off", "not measured"]
Status = Literal["ok", "did_not_fit", "error"]

#: relative tolerance per quantity (the first component of a row's term); 0 means exact.
TOLERANCES: dict[str, float] = {
    "params": 0.0,
    "memory.weights": 0.0,
    "memory.gradients": 0.0,
    "memory.optimizer": 0.0,
    "memory.activations": 0.01,
    "kv_cache": 0.0,
    "flops": 0.0,
    "peak_memory": 0.02,
}


class Row(BaseModel):
    """One term: predicted vs measured, and the verdict under its quantity's tolerance."""

    model_config = ConfigDict(frozen=True)

    term: str
    unit: Literal["params", "bytes", "flops"]
    predicted: int
    measured: int | None
    abs_error: int | None
    rel_error: float | None
    tolerance: float
    verdict: Verdict
    note: str = ""


class Point(BaseModel):
    """A validated (model, workload): one JSON line of validation.jsonl. ``run_id`` tells
    apart the runs appending to one file; ``tgauge_version`` the code that measured it."""

    model: str
    device: str
    workload: dict[str, Any]
    status: Status
    implementation: Literal["reference", "hf"] = "reference"  # the code measured
    run_id: str = ""
    tgauge_version: str = __version__
    predicted_fits: bool | None = None
    peak_phase_predicted: str | None = None
    peak_phase_measured: str | None = None
    rows: list[Row] = []
    notes: list[str] = []

    @property
    def worst(self) -> Verdict:
        order = ("off", "not measured", "within", "exact")
        found = {r.verdict for r in self.rows}
        return next((v for v in order if v in found), "exact")


def tolerance_of(term: str) -> float:
    """The tolerance of the longest quantity prefix of ``term``."""
    keys = [k for k in TOLERANCES if term == k or term.startswith(k + ".")]
    return TOLERANCES[max(keys, key=len)] if keys else 0.0


def make_row(term: str, unit: str, predicted: int, measured: int | None, note: str = "") -> Row:
    tol = tolerance_of(term)
    if measured is None:
        return Row(
            term=term,
            unit=unit,
            predicted=predicted,
            measured=None,
            abs_error=None,
            rel_error=None,
            tolerance=tol,
            verdict="not measured",
            note=note,
        )
    diff = predicted - measured
    rel = abs(diff) / measured if measured else (0.0 if diff == 0 else float("inf"))
    verdict: Verdict = "exact" if diff == 0 else ("within" if rel <= tol else "off")
    return Row(
        term=term,
        unit=unit,
        predicted=predicted,
        measured=measured,
        abs_error=diff,
        rel_error=rel,
        tolerance=tol,
        verdict=verdict,
        note=note,
    )


def compare(
    prefix: str,
    unit: str,
    predicted: dict[str, int],
    measured: dict[str, int] | None,
    *,
    total: bool = True,
    note: str = "",
    unmeasured: frozenset[str] = frozenset(),
) -> list[Row]:
    """Rows for the union of terms (a term missing on one side counts as 0 there), then the
    total. ``measured=None``: nothing measured. Terms in ``unmeasured`` are reported as not
    measured (with ``note``) and left out of the total on both sides."""
    names = sorted(set(predicted) | set(measured or {}))
    rows = []
    for name in names:
        got = None if measured is None or name in unmeasured else measured.get(name, 0)
        rows.append(
            make_row(
                f"{prefix}.{name}",
                unit,
                predicted.get(name, 0),
                got,
                note if name in unmeasured else "",
            )
        )
    if total and len(names) > 1:
        kept = [n for n in names if n not in unmeasured]
        got = None if measured is None else sum(measured.get(n, 0) for n in kept)
        rows.append(
            make_row(
                f"{prefix}.total",
                unit,
                sum(predicted.get(n, 0) for n in kept),
                got,
                "over the measured terms" if unmeasured else "",
            )
        )
    return rows


def state_rows(predicted: dict[str, int], measured: dict[str, int]) -> list[Row]:
    """The gradients row and one row per optimizer state (bytes) of a training step."""
    grads = make_row(
        "memory.gradients", "bytes", predicted.get("gradients", 0), measured["gradients"]
    )
    states = compare(
        "memory.optimizer",
        "bytes",
        _memory_split(predicted, "optimizer"),
        _memory_split(measured, "optimizer"),
    )
    return [grads, *states]


def _memory_split(terms: dict[str, int], group: str) -> dict[str, int]:
    cut = len(group) + 1
    return {k[cut:]: v for k, v in terms.items() if k.startswith(group + ".")}


def for_device(workload: Workload, device: str) -> Workload:
    """The workload the estimator predicts for the kernels of the device measured (what
    autograd saves differs); its JSON is the ``workload`` of the point's record."""
    kernels = "cpu" if device.split(":")[0] == "cpu" else "cuda"
    return workload.model_copy(update={"device": kernels})


#: torch's out-of-memory messages: CUDA ("CUDA out of memory"), the CPU allocator
#: ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."), MPS
OOM_MESSAGES = ("out of memory", "can't allocate memory", "defaultcpuallocator")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure on any device (MemoryError included)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(m in text for m in OOM_MESSAGES)


def validate_point(
    spec: ModelSpec,
    workload: Workload,
    *,
    device: str = "cpu",
    fvcore: bool = False,
    available: int | None = None,
    hf_config: dict[str, Any] | None = None,
) -> Point:
    """Measure ``workload`` on the reference model of ``spec`` and compare with estimate().

    ``available``: bytes the device offers; the point then records whether the estimator
    predicted that it fits. ``hf_config``: measure the Hugging Face model of this config
    instead (tgauge/validate_hf.py; ``spec`` is its ModelSpec.from_hf_config)."""
    from estimator import estimate

    workload = for_device(workload, device)
    if hf_config is None and spec.implementation != "reference":
        # our reference model of this spec is what runs: predict what its code does
        spec = spec.model_copy(update={"implementation": "reference"})
    est = estimate(spec, workload)
    fits = None if available is None else est.peak_memory_bytes <= available
    point = Point(
        model=spec.name,
        device=device,
        workload=workload.model_dump(mode="json"),
        status="ok",
        implementation="reference" if hf_config is None else "hf",
        predicted_fits=fits,
        peak_phase_predicted=est.peak_phase,
    )
    runner = {"train": _train, "prefill": _prefill, "decode": _decode}[workload.mode]
    try:
        if hf_config is not None:
            from tgauge.validate_hf import validate_hf

            validate_hf(spec, hf_config, workload, est, point, device)
        else:
            runner(spec, workload, est, point, device, fvcore)
    except Exception as exc:  # a point that fails is data here: the sweep goes on
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        if is_out_of_memory(exc):
            point.status = "did_not_fit"
            point.notes.append(f"out of memory on {device}: {first_line}")
        else:
            point.status = "error"
            point.notes.append(f"{type(exc).__name__}: {first_line}")
        point.rows = []
        # the traceback's frames hold the failed point's model and tensors: free them now,
        # or the next point (which may fit alone) runs out of memory too
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        del exc
        _release_memory(device)
    return point


def _release_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _common_rows(est: Any, prof: Any) -> list[Row]:
    """Parameters per term and weight bytes: ``prof`` has ``n_params`` and ``weights``."""
    rows = compare("params", "params", est.params.terms, prof.n_params.terms)
    rows.append(
        make_row("memory.weights", "bytes", est.memory.terms.get("weights", 0), prof.weights.total)
    )
    return rows


def _flop_rows(est: Any, counted: Any, phases: tuple[str, ...]) -> list[Row]:
    """FLOP rows of ``phases`` from a profiler FlopCount."""
    measured = {k: v for k, v in counted.flops.terms.items() if k.split(".")[0] in phases}
    predicted = {k: v for k, v in est.flops.terms.items() if k.split(".")[0] in phases}
    unmeasured: frozenset[str] = frozenset()
    note = ""
    if any("scaled_dot_product" in op for op in counted.uncounted_ops):
        # FlopCounterMode has no formula for this device's fused attention kernel
        unmeasured = frozenset(n for n in predicted if n.endswith(".sdpa"))
        note = "FlopCounterMode has no formula for " + ", ".join(sorted(counted.uncounted_ops))
    return compare("flops", "flops", predicted, measured, note=note, unmeasured=unmeasured)


def _train(
    spec: ModelSpec, workload: Workload, est: Any, point: Point, device: str, fvcore: bool
) -> None:
    from profiler import profile_train_step
    from reference_model import build_model
    from reference_model.inputs import make_inputs
    from reference_model.train import autocast_dtype, make_optimizer, objective

    model = build_model(spec, workload, device=device)
    model.train()
    inputs = make_inputs(spec, workload, device=device)
    optimizer = make_optimizer(model, workload)
    prof = profile_train_step(
        model,
        inputs,
        optimizer,
        loss_fn=objective,
        repeats=1,
        fvcore=fvcore,
        autocast=autocast_dtype(workload),
    )
    mem, measured = est.memory.terms, prof.memory().terms
    point.rows += _common_rows(est, prof)
    point.rows += state_rows(mem, measured)
    point.rows += compare(
        "memory.activations",
        "bytes",
        _memory_split(mem, "activations"),
        _memory_split(measured, "activations"),
    )
    point.rows += _flop_rows(est, prof.flops, ("forward", "backward", "recompute"))
    point.rows.append(_train_peak_row(workload, est, prof.live_peak.peak_bytes))
    point.peak_phase_measured = prof.live_peak.phase
    allocated = prof.cuda.max_allocated_bytes.value
    if allocated is not None:  # the CUDA caching allocator's view of the same step
        note = "torch.cuda.max_memory_allocated: 512-byte blocks, library workspaces included"
        point.rows.append(
            make_row("peak_memory.cuda_allocated", "bytes", est.peak_memory_bytes, allocated, note)
        )


def _train_peak_row(workload: Workload, est: Any, measured: int) -> Row:
    """The training peak; bitsandbytes' CPU step runs inside one custom op, whose
    temporaries (its fp32 working set) the live tracker cannot see: not measured there."""
    if workload.optimizer == "adamw-8bit" and workload.device == "cpu":
        note = (
            "bitsandbytes' CPU step is one custom op: the live tracker sees none of its "
            f"temporaries (it saw {measured:,} B)"
        )
        return make_row("peak_memory", "bytes", est.peak_memory_bytes, None, note)
    return make_row("peak_memory", "bytes", est.peak_memory_bytes, measured)


def _prefill(
    spec: ModelSpec, workload: Workload, est: Any, point: Point, device: str, fvcore: bool
) -> None:
    import torch

    from profiler import profile_forward
    from reference_model import build_model
    from reference_model.inputs import make_inputs

    model = build_model(spec, workload, device=device)
    model.eval()
    inputs = make_inputs(spec, workload, device=device)
    prof = profile_forward(model, inputs, repeats=1, fvcore=fvcore)
    point.rows += _common_rows(est, prof)
    point.rows += _flop_rows(est, prof.flops, ("forward",))
    live_peak = prof.live_peak  # Transformer.forward, from weights + buffers + inputs
    if est.kv_cache.terms:  # the cache a prefill fills, measured on the model's own prefill
        from profiler import inference_tracker

        cache = model.new_cache()
        live = inference_tracker(model, inputs)  # its peak: the prefill that keeps the cache
        with torch.no_grad(), live:
            live.set_phase("prefill")
            _run_prefill(model, spec, inputs, cache)
        live_peak = live.peak
        point.rows += compare("kv_cache", "bytes", est.kv_cache.terms, cache.terms())
    _peak_row(est, live_peak, point)


def _peak_row(est: Any, live_peak: Any, point: Point) -> None:
    """The inference peak: live bytes from weights + buffers + inputs (profiler/live.py)."""
    point.rows.append(make_row("peak_memory", "bytes", est.peak_memory_bytes, live_peak.peak_bytes))
    phase = live_peak.phase
    point.peak_phase_measured = "prefill" if phase == "forward" else phase


def _run_prefill(model: Any, spec: ModelSpec, inputs: dict[str, Any], cache: Any) -> Any:
    if spec.arch == "encoder-decoder":
        return model.prefill(
            inputs["decoder_input_ids"], cache, encoder_input_ids=inputs["input_ids"]
        )
    return model.prefill(inputs["input_ids"], cache)


def _decode(
    spec: ModelSpec, workload: Workload, est: Any, point: Point, device: str, fvcore: bool
) -> None:
    import torch

    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_growth_bytes
    from profiler import count_flops, measure_params, param_bytes, profile_decode
    from reference_model import build_model

    model = build_model(spec, workload, device=device)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    sh = resolve(spec, workload)
    b, p = sh.b, sh.prompt
    prompt = torch.randint(0, spec.vocab_size, (b, p), generator=gen).to(device)
    source = torch.randint(0, spec.vocab_size, (b, workload.seq_len), generator=gen).to(device)
    cache = model.new_cache()
    last: list[Any] = []

    def prefill() -> None:
        nonlocal cache
        cache = model.new_cache()
        inputs = (
            {"input_ids": source, "decoder_input_ids": prompt}
            if spec.arch == "encoder-decoder"
            else {"input_ids": prompt}
        )
        last[:] = [_run_prefill(model, spec, inputs, cache)[:, -1:].argmax(-1)]

    def step(_: int) -> None:  # only the latest token id is kept
        last[:] = [model.decode_step(last[-1], cache).argmax(-1)]

    def generate() -> None:  # the prefill and N one-token steps, as the estimator counts
        prefill()
        for t in range(workload.new_tokens):
            step(t)

    with torch.no_grad():
        counted = count_flops(model, generate)
        prof = profile_decode(
            step,
            workload.new_tokens,
            lambda: cache.nbytes(),
            device=device,
            prefill_fn=prefill,
            model=model,
            inputs=[prompt, source] if spec.arch == "encoder-decoder" else [prompt],
        )
    point.rows += _common_rows(
        est, SimpleNamespace(n_params=measure_params(model), weights=param_bytes(model))
    )
    point.rows += _flop_rows(est, counted, ("forward",))
    predicted = kv_cache_growth_bytes(spec, sh)
    for t, (pred, got) in enumerate(zip(predicted, prof.cache_bytes, strict=True)):
        point.rows.append(make_row(f"kv_cache.after_step.{t}", "bytes", pred, got))
    point.rows += compare("kv_cache", "bytes", est.kv_cache.terms, cache.terms())
    _peak_row(est, prof.live_peak, point)
