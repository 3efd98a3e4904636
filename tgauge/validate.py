"""Validation: build the reference model, run the workload, measure it, and compare every
measured quantity with the estimator's prediction of the same name (docs/glossary.md).

One `Point` per (spec, workload): rows of predicted vs measured per term, with a verdict
against the tolerance of its quantity (the records and the comparison: tgauge/comparison.py).
Torch is imported inside the functions that run models.
"""

from __future__ import annotations

import traceback
from types import SimpleNamespace
from typing import Any

from estimator.spec import ModelSpec, Workload
from tgauge.comparison import (
    Point,
    Row,
    compare,
    make_row,
    memory_split,
    state_rows,
    train_peak_row,
)


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

    # every field stated: a validation measures exactly the workload it records, never the
    # model's usual settings that estimate() fills into unset fields (resolved_defaults)
    workload = Workload.model_validate(for_device(workload, device).model_dump())
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


def _force_routing(model: Any, spec: ModelSpec, workload: Workload) -> None:
    """A mixture of experts routes as its estimate assumes (Workload.routing): a random
    router's choice is arbitrary, the peaks depend on it (reference_model/moe.py)."""
    if spec.n_experts:
        from reference_model.moe import force_routing

        force_routing(model, workload.routing)


def _release_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _common_rows(est: Any, prof: Any) -> list[Row]:
    """Parameters per term and weight bytes: ``prof`` has ``n_params`` and ``weights``."""
    rows = compare("params", "params", est.params.terms | _adapter_params(est), prof.n_params.terms)
    weights = est.memory.terms.get("weights", 0) + est.memory.terms.get("weights.adapters", 0)
    rows.append(make_row("memory.weights", "bytes", weights, prof.weights.total))
    return rows


def _adapter_params(est: Any) -> dict[str, int]:
    """LoRA's adapters by term name (``<module>.lora_A`` / ``.lora_B``, reference_model/lora.py),
    which the model's measured parameters include (issue 20)."""
    if est.workload.finetune not in ("lora", "qlora"):
        return {}
    from estimator.shapes import resolve
    from estimator.terms.finetune import trainable_params

    return trainable_params(est.spec, resolve(est.spec, est.workload))


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
    _force_routing(model, spec, workload)
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
        memory_split(mem, "activations"),
        memory_split(measured, "activations"),
    )
    point.rows += _flop_rows(est, prof.flops, ("forward", "backward", "recompute"))
    point.rows.append(train_peak_row(workload, est, prof.live_peak.peak_bytes))
    point.peak_phase_measured = prof.live_peak.phase
    allocated = prof.cuda.max_allocated_bytes.value
    if allocated is not None:  # the CUDA caching allocator's view of the same step
        note = "torch.cuda.max_memory_allocated: 512-byte blocks, library workspaces included"
        point.rows.append(
            make_row("peak_memory.cuda_allocated", "bytes", est.peak_memory_bytes, allocated, note)
        )


def _prefill(
    spec: ModelSpec, workload: Workload, est: Any, point: Point, device: str, fvcore: bool
) -> None:
    import torch

    from profiler import profile_forward
    from reference_model import build_model
    from reference_model.inputs import make_inputs

    model = build_model(spec, workload, device=device)
    _force_routing(model, spec, workload)
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
    _force_routing(model, spec, workload)
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
