"""`tgauge validate CONFIG.json --hf`: the estimate of ModelSpec.from_hf_config against the real
transformers model (tgauge/hf_models.py), in train, prefill and decode.

Measured terms are renamed onto glossary terms by the family's table (tgauge/hf_terms.py);
an HF module without an entry keeps its HF name (``hf:...``): every measured byte, FLOP and
parameter appears in some row. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from estimator.spec import Workload
from tgauge.comparison import (
    Point,
    Row,
    compare,
    make_row,
    memory_split,
    state_rows,
    train_peak_row,
)

NOTE = "Hugging Face model: HF modules mapped onto glossary terms (tgauge/hf_terms.py)"
GENERATE_NOTE = (
    "engine hf-generate: measured on transformers' generate(max_new_tokens=new_tokens + 1, "
    "min_new_tokens=max_new_tokens, greedy)"
)


def _mapped(
    prefix: str, unit: str, family: str, base: str, predicted: dict[str, int], measured: Any
) -> list[Row]:
    from tgauge.hf_terms import map_terms

    got, want = map_terms(family, base, measured, predicted)
    return compare(prefix, unit, want, got)


def _flop_rows(family: str, base: str, est: Any, counted: Any, phases: tuple[str, ...]) -> list:
    """FLOP rows per phase; as tgauge.validate._flop_rows, the fused attention terms are not
    measured where FlopCounterMode has no formula for the device's sdpa kernel."""
    from tgauge.hf_terms import map_terms

    uncounted = any("scaled_dot_product" in op for op in counted.uncounted_ops)
    note = "FlopCounterMode has no formula for " + ", ".join(sorted(counted.uncounted_ops))
    rows = []
    for phase in phases:
        cut = len(phase) + 1
        measured = {k[cut:]: v for k, v in counted.flops.terms.items() if k.startswith(phase + ".")}
        predicted = {k[cut:]: v for k, v in est.flops.terms.items() if k.startswith(phase + ".")}
        if not (measured or predicted):
            continue
        got, want = map_terms(family, base, measured, predicted)
        unmeasured = frozenset(n for n in want if uncounted and "sdpa" in n)
        rows += compare(f"flops.{phase}", "flops", want, got, note=note, unmeasured=unmeasured)
    return rows


def validate_hf(
    spec: Any, config: dict[str, Any], workload: Workload, est: Any, point: Point, device: str
) -> None:
    """Rows of one point on the real model of ``config``: parameters per term, weights; in
    training gradients, optimizer states, saved activations per term, FLOPs per term and the
    peak; prefill FLOPs and the peak; decode the cache after the prefill and every step."""
    import torch

    from tgauge.hf_terms import base_prefix
    from tgauge.targets import hf_target

    torch.manual_seed(0)
    target = hf_target(config, workload, device)
    family, base = config["model_type"], base_prefix(target.model)
    runner = {"train": _train, "prefill": _prefill, "decode": _decode}[workload.mode]
    runner(target, family, base, spec, workload, est, point)
    point.notes.append(NOTE)
    if workload.mode != "train" and workload.engine == "hf-generate":
        point.notes.append(GENERATE_NOTE)


def _param_rows(family: str, base: str, est: Any, n_params: Any, weights: int) -> list[Row]:
    predicted = dict(est.params.terms) | _adapter_params(est)
    rows = _mapped("params", "params", family, base, predicted, n_params.terms)
    mem = est.memory.terms  # QLoRA: the 4-bit base with its quant states too (issue 20)
    want = mem["weights"] + mem.get("weights.adapters", 0) + mem.get("weights.base4bit", 0)
    rows.append(make_row("memory.weights", "bytes", want, weights))
    return rows


def _adapter_params(est: Any) -> dict[str, int]:
    """LoRA's adapters by term name (issue 20; GPT-2's fused qkv under q_proj, as the HF
    table groups c_attn), what peft adds to the measured parameters."""
    if est.workload.finetune not in ("lora", "qlora"):
        return {}
    from estimator.shapes import resolve
    from estimator.terms.finetune import trainable_params

    terms = trainable_params(est.spec, resolve(est.spec, est.workload))
    return {k.replace(".qkv.", ".q_proj."): v for k, v in terms.items()}


def _train(
    target: Any, family: str, base: str, spec: Any, workload: Workload, est: Any, point: Point
) -> None:
    from profiler import profile_train_step
    from reference_model.train import autocast_dtype

    prof = profile_train_step(
        target.model,
        target.inputs,
        target.optimizer,
        loss_fn=target.loss_fn,
        repeats=1,
        fvcore=False,
        autocast=autocast_dtype(workload),
    )
    mem, measured = est.memory.terms, prof.memory().terms
    point.rows += _param_rows(family, base, est, prof.n_params, prof.weights.total)
    point.rows += state_rows(mem, measured)
    acts = memory_split(mem, "activations"), memory_split(measured, "activations")
    point.rows += _mapped("memory.activations", "bytes", family, base, *acts)
    point.rows += _flop_rows(family, base, est, prof.flops, ("forward", "backward"))
    point.rows.append(train_peak_row(workload, est, prof.live_peak.peak_bytes))
    point.peak_phase_measured = prof.live_peak.phase


def _prefill(
    target: Any, family: str, base: str, spec: Any, workload: Workload, est: Any, point: Point
) -> None:
    from profiler import profile_forward

    if workload.engine == "hf-generate":  # generate()'s prefill and its first token
        _generate(target, family, base, spec, workload, est, point)
        return
    prof = profile_forward(target.model, target.inputs, repeats=1, fvcore=False)
    point.rows += _param_rows(family, base, est, prof.n_params, prof.weights.total)
    point.rows += _flop_rows(family, base, est, prof.flops, ("forward",))
    point.rows.append(
        make_row("peak_memory", "bytes", est.peak_memory_bytes, prof.live_peak.peak_bytes)
    )
    phase = prof.live_peak.phase
    point.peak_phase_measured = "prefill" if phase == "forward" else phase


def _decode(
    target: Any, family: str, base: str, spec: Any, workload: Workload, est: Any, point: Point
) -> None:
    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_growth_bytes
    from profiler import measure_params, param_bytes, profile_decode

    if workload.engine == "hf-generate":
        _generate(target, family, base, spec, workload, est, point)
        return
    dec = target.decoder
    prof = profile_decode(
        dec.step,
        workload.new_tokens,
        dec.cache_bytes,
        prefill_fn=dec.prefill,
        model=target.model,
        inputs=[t for t in (dec.input_ids, dec.encoder_input_ids) if t is not None],
    )
    model = target.model
    weights = param_bytes(model).total
    point.rows += _param_rows(family, base, est, measure_params(model), weights)
    predicted = kv_cache_growth_bytes(spec, resolve(spec, workload))
    for t, (pred, got) in enumerate(zip(predicted, prof.cache_bytes, strict=True)):
        point.rows.append(make_row(f"kv_cache.after_step.{t}", "bytes", pred, got))
    peak = prof.live_peak
    point.rows.append(make_row("peak_memory", "bytes", est.peak_memory_bytes, peak.peak_bytes))
    point.peak_phase_measured = peak.phase


def _generate(
    target: Any, family: str, base: str, spec: Any, workload: Workload, est: Any, point: Point
) -> None:
    """engine='hf-generate': transformers' own ``generate()`` (profiler/run.py HFGenerate),
    greedy with min_new_tokens = max_new_tokens = new_tokens + 1 (the prefill picks the first
    token, each of the new_tokens steps one more); the cache after the prefill and each step,
    the live peak and its phase."""
    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_growth_bytes
    from profiler import measure_params, param_bytes
    from profiler.run import HFGenerate

    decode = workload.mode == "decode"
    ids = target.decoder.input_ids if decode else target.inputs["input_ids"]
    run = HFGenerate(target.model, ids, workload.new_tokens + 1 if decode else 1)
    run.run()
    model = target.model
    point.rows += _param_rows(family, base, est, measure_params(model), param_bytes(model).total)
    predicted = kv_cache_growth_bytes(spec, resolve(spec, workload))[: len(run.cache_sizes)]
    for t, (pred, got) in enumerate(zip(predicted, run.cache_sizes, strict=True)):
        point.rows.append(make_row(f"kv_cache.after_step.{t}", "bytes", pred, got))
    peak = run.live_peak
    point.rows.append(make_row("peak_memory", "bytes", est.peak_memory_bytes, peak.peak_bytes))
    point.peak_phase_measured = peak.phase
