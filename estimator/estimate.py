"""estimate(spec, workload): every prediction of the estimator in one typed Estimate."""

from __future__ import annotations

from estimator.autocast import cuda_differences
from estimator.breakdown import Estimate
from estimator.flops import decode_flops, flops
from estimator.kv_cache import kv_cache
from estimator.memory import memory, peak_memory
from estimator.params import params
from estimator.spec import (
    ModelSpec,
    Workload,
    check_compatible,
    resolved_optimizer_impl,
    revalidated,
)
from estimator.textbook import textbook


def _unchecked(spec: ModelSpec, workload: Workload) -> list[str]:
    """Predictions that no measurement of tgauge checks (modelled only)."""
    if workload.mode == "train":
        peak = (
            "peak_memory_bytes: checked on CPU against live tensors (within 2%, "
            "docs/validation.md); CUDA allocator caching and fragmentation are not modelled"
        )
    else:
        peak = (
            "peak_memory_bytes: checked on CPU against live tensors (prefill and decode exact "
            "on the validation matrix, docs/validation.md); "
            "CUDA allocator caching and kernel workspaces are not modelled"
        )
    out = [peak, "textbook: back-of-envelope formulas (estimate --textbook), for comparison only"]
    if workload.device == "cuda":
        out.append(
            "device='cuda': the saved-tensor sets of CUDA kernels are assumed; only the "
            "CPU kernels are checked so far (no GPU run yet)"
        )
    out += cuda_differences(workload)
    if workload.mode == "decode":
        out.append("decode.per_step_flops_without_cache: computed, not measured step by step")
    if workload.attention_impl == "fused":
        out.append("flops sdpa terms: FlopCounterMode counts sdpa only on CUDA kernels (0 on CPU)")
    if workload.causal_flops == "triangle":
        out.append("flops under causal_flops='triangle': no kernel counter reports the triangle")
    if workload.mode == "train" and workload.device == "cuda" and workload.optimizer != "none":
        out.append(
            "optimizer step temporaries on cuda: replayed from torch's optimizer code, which "
            "is the same on CPU (measured there, docs/validation.md); no GPU run yet"
        )
    if workload.mode == "train" and workload.optimizer == "adamw-8bit":
        out.append(
            "optimizer adamw-8bit: state bytes checked on CPU against bitsandbytes' AdamW8bit "
            "(exact, where bitsandbytes is installed); the step's temporaries are modelled from "
            "its source (CPU: the fp32 working set inside one custom op, which the live "
            "tracker cannot see; CUDA: none), not measured"
        )
    if workload.mode == "train" and workload.master_weights:
        out.append("master_weights: the optimizer's fp32 states and step are not measured")
    if workload.dtype == "int4":
        out.append("weights in int4: scales/zero points of a real quantizer are not counted")
    return out


def estimate(spec: ModelSpec, workload: Workload) -> Estimate:
    """All predictions for (spec, workload); SpecError when the workload cannot run (a copy
    that skipped validation is validated here)."""
    spec, workload = revalidated(spec, workload)
    check_compatible(spec, workload)
    impl = resolved_optimizer_impl(workload)
    if workload.is_training and workload.optimizer_impl != impl:  # say which torch picks
        workload = workload.model_copy(update={"optimizer_impl": impl})
    p = params(spec)
    mem = memory(spec, workload)
    peak, phase = peak_memory(spec, workload, mem)
    return Estimate(
        spec=spec,
        workload=workload,
        params=p,
        memory=mem,
        flops=flops(spec, workload),
        kv_cache=kv_cache(spec, workload),
        peak_memory_bytes=peak,
        peak_phase=phase,
        decode=decode_flops(spec, workload) if workload.mode == "decode" else None,
        textbook=textbook(spec, workload, p, mem),
        unchecked=_unchecked(spec, workload),
    )
