"""estimate(spec, workload): every prediction of the estimator in one typed Estimate.

The flow: (spec, workload) validated -> checked (the model can run it, the rules model it) ->
resolved once (estimator/shapes.py) -> ``raw_estimate``: the terms (estimator/terms/) and the
peak of the step's timeline (estimator/replay/), plain numbers by name -> the typed Estimate.
``raw_estimate`` is what estimator/compiled/ traces once per structure; ``estimate`` then
evaluates the compiled program instead of running the terms again (``direct=True`` runs them).
"""

from __future__ import annotations

from typing import Any

from estimator.breakdown import Breakdown, DecodeFlops, Estimate
from estimator.replay.peak import peak_memory
from estimator.rules.registry import rule
from estimator.shapes import Shapes, resolve
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload, check_compatible, revalidated
from estimator.terms.flops import decode_flops, flops
from estimator.terms.kv_cache import kv_cache
from estimator.terms.memory import memory
from estimator.terms.params import params
from estimator.terms.textbook import textbook


def check_supported(spec: ModelSpec, workload: Workload, sh: Shapes | None = None) -> None:
    """SpecError when the model cannot run ``workload`` (estimator.spec.check_compatible),
    UnsupportedError when the estimator's rules do not model it (rule ``unsupported``: e.g.
    autocast on an encoder-decoder model). ``sh``: the resolved run, when at hand."""

    def unsupported() -> str | None:
        run = resolve(spec, workload) if sh is None else sh
        return rule("unsupported", spec, run)(spec, run)

    check_compatible(spec, workload, unsupported)


def raw_estimate(spec: ModelSpec, sh: Shapes) -> dict[str, Any]:
    """Every size-dependent prediction of the run ``sh``, as plain numbers by name: memory,
    FLOP and KV-cache terms, the peak and its phase, and decode's FLOPs."""
    mem = memory(spec, sh)
    peak, phase = peak_memory(spec, sh, mem)
    return {
        "memory": mem,
        "flops": flops(spec, sh),
        "kv_cache": kv_cache(spec, sh),
        "peak": peak,
        "phase": phase,
        "decode": decode_flops(spec, sh) if sh.mode == "decode" else None,
    }


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
    return out + finetune_unchecked(spec, workload)


def finetune_unchecked(spec: ModelSpec, workload: Workload) -> list[str]:
    """What no measurement checks of a fine-tuning run (issue 20)."""
    ft = workload.finetune
    if ft == "full":
        return []
    if ft == "freeze":
        return [
            "finetune='freeze': gradients and optimizer states of the trainable tensors only; "
            "activations and backward counted as full training saves and runs them (frozen "
            "modules save less: an upper bound), not measured"
        ]
    out = [
        f"finetune={ft!r}: trainable parameters, gradients, optimizer states and LoRA's saved "
        "tensors checked on CPU against peft (tiny HF Llama / GPT-2); the adapters' backward "
        "transients (their input grads, the fp32 promotion of a 16-bit base's output) are not "
        "modelled"
    ]
    if workload.attention_impl == "fused":
        out.append(f"flops under finetune={ft!r} with fused attention: layer 0's sdpa "
                   "backward is counted whole (checked on eager attention only)")  # fmt: skip
    if spec.implementation == "reference":
        out.append(
            "finetune on the reference model: predicted with the rules measured on the Hugging "
            "Face classes (the reference model has no adapters yet)"
        )
    if workload.checkpointing == "full":
        out.append(f"finetune={ft!r} with checkpointing: the recompute's saved set under frozen "
                   "weights is the rules' (not measured)")  # fmt: skip
    if ft == "qlora":
        out.append(
            "qlora: the 4-bit base's bytes checked against bitsandbytes on CPU (exact); the "
            "dequantized-weight temporary of each 4-bit linear's backward is modelled from "
            "bitsandbytes' source, its forward one is not counted; bitsandbytes' CUDA kernels "
            "(gemm_4bit's custom path for small batches, their workspaces) are not checked (no "
            "GPU run)"
        )
    return out


def cuda_differences(workload: Workload) -> list[str]:
    """What CUDA's autocast lists change against the CPU lists the prediction used."""
    if not workload.autocast or workload.device != "cuda":
        return []
    out = [
        f"autocast {workload.autocast} on cuda: predicted with torch's CPU autocast op lists; "
        "CUDA runs softmax in fp32 (eager attention would save fp32 probabilities and a "
        "low-dtype copy for probs @ v), and flash / memory-efficient sdpa's saved set under "
        "autocast (and cuBLAS workspaces) are not checked (no GPU run yet)"
    ]
    if workload.autocast == "fp16":
        out.append(
            "autocast fp16 on cuda: GradScaler's scale, growth tracker and found-inf tensors "
            "(12 bytes) and its unscale pass are not counted"
        )
    return out


def assemble(spec: ModelSpec, workload: Workload, sh: Shapes, raw: dict[str, Any]) -> Estimate:
    """The typed Estimate of ``raw`` (``raw_estimate``'s numbers, evaluated)."""
    p = params(spec)
    mem = raw["memory"]
    decode = raw["decode"]
    return Estimate(
        spec=spec,
        workload=workload,
        params=p,
        memory=Breakdown(unit="bytes", terms=mem),
        flops=Breakdown(unit="flops", terms=raw["flops"]),
        kv_cache=Breakdown(unit="bytes", terms=raw["kv_cache"]),
        peak_memory_bytes=raw["peak"],
        peak_phase=raw["phase"],
        decode=None if decode is None else DecodeFlops(**decode),
        textbook=textbook(spec, sh, p.total, mem),
        unchecked=_unchecked(spec, workload),
    )


def estimate(spec: ModelSpec, workload: Workload, *, direct: bool = False) -> Estimate:
    """All predictions for (spec, workload); SpecError when the workload cannot run (a copy
    that skipped validation is validated here). ``direct``: run the term functions rather
    than a compiled program of this structure (the same numbers; estimator/compiled/)."""
    spec, workload = revalidated(spec, workload)
    sh = resolve(spec, workload)
    check_supported(spec, workload, sh)
    if sh.training and workload.optimizer_impl != sh.optimizer_impl:  # say which torch picks
        workload = workload.model_copy(update={"optimizer_impl": sh.optimizer_impl})
    if direct:
        raw = raw_estimate(spec, sh)
    else:
        from estimator.compiled import evaluate

        raw = evaluate(raw_estimate, spec, workload)
    return assemble(spec, workload, sh, raw)
