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
from estimator.replay.engines import engine
from estimator.replay.peak import peak_memory, train_peak
from estimator.rules.registry import rule
from estimator.shapes import Shapes, resolve
from estimator.spec.errors import UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.spec.parallel import Parallel
from estimator.spec.workload import (
    Workload,
    check_compatible,
    defaults_text,
    resolved_defaults,
    revalidated,
)
from estimator.terms.flops import decode_flops, flops
from estimator.terms.kv_cache import kv_cache
from estimator.terms.memory import memory
from estimator.terms.params import params
from estimator.terms.quant import quant_format
from estimator.terms.textbook import textbook


def check_supported(spec: ModelSpec, workload: Workload, sh: Shapes | None = None) -> None:
    """SpecError when the model cannot run ``workload`` (estimator.spec.check_compatible),
    UnsupportedError when the estimator's rules do not model it (rule ``unsupported``: e.g.
    autocast on an encoder-decoder model). ``sh``: the resolved run, when at hand."""

    def unsupported() -> str | None:
        run = resolve(spec, workload) if sh is None else sh
        if workload.checkpointing == "selective":
            if workload.attention_impl != "eager" or spec.implementation != "reference":
                return (
                    "checkpointing='selective' (recompute the eager attention core) is modelled "
                    "for the reference model's eager attention only; fused attention already "
                    "recomputes its scores"
                )
            if any(run.stack(st).pattern == "chunked" for st, _ in spec.stacks):
                return "checkpointing='selective' with chunked attention is not modelled"
        if run.mode != "train":  # the serving engine (issue 19)
            why = engine(spec, run).unsupported()
            if why:
                return why
        if workload.kbit_prep and spec.implementation != "hf":  # issue 20
            return (
                "kbit_prep: peft's prepare_model_for_kbit_training prepares a transformers "
                f"model, not implementation={spec.implementation!r}: estimate the Hugging Face "
                "class (--impl hf)"
            )
        if run.quant is not None:  # quantized weights (issue 19)
            if run.training:
                return f"quant={run.quant!r} is modelled for inference, not mode='train'"
            quant_format(run.quant)  # UnsupportedError for a format not registered
        # issue 22: features the memory rules do not model (estimator/rules/features.py)
        return rule("unmodelled", spec, run)(spec, run) or rule("unsupported", spec, run)(spec, run)

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
    out += _unchecked_serving(workload)
    if spec.n_experts and spec.implementation == "reference":  # issue 22e
        out.append(REFERENCE_ROUTING.format(routing=workload.routing))
    elif spec.n_experts:  # issue 22: the routing assumption, stated
        out.append(MOE_ROUTING)
    return out + finetune_unchecked(spec, workload)


#: what a mixture of experts' estimate assumes of the routing (estimator/rules/hf/moe.py)
MOE_ROUTING = (
    "mixture of experts: no routing assumption enters with experts_impl='grouped_mm' "
    "(transformers' default): every tensor it saves or holds is sized by the k n routed "
    "(token, expert) pairs whichever experts the router picks, FLOPs count k experts per "
    "token, parameters, gradients and optimizer states all experts; the per-expert loop "
    "(eager) and batched_mm are refused for memory, and grouped_mm's CUDA kernel workspace "
    "is not modelled"
)


#: the reference model's experts (estimator/rules/reference/moe.py, issue 22e)
REFERENCE_ROUTING = (
    "mixture of experts: the peaks assume routing={routing!r} (uniform: the k n routed "
    "(token, expert) pairs spread evenly over the experts; worst: every token on the same k "
    "experts); saved activations, parameters, gradients and optimizer states (all experts) "
    "are the same for any routing, FLOPs count k experts per token"
)


def _unchecked_serving(workload: Workload) -> list[str]:
    """What the serving engine, the cache dtype and quantized weights leave unmeasured."""
    out = []
    if workload.mode != "train" and workload.kv_cache_dtype != workload.compute_dtype:
        out.append(
            f"kv_cache_dtype={workload.kv_cache_dtype!r}: the cache is held in its dtype and "
            "the new keys/values cast into it (as vLLM's fp8 cache); no CPU engine stores it "
            "so, hence not measured"
        )
    if workload.mode != "train" and workload.engine == "hf-generate":
        out.append(
            "engine hf-generate: measured against generate() greedy with min_new_tokens (its "
            "two MinLength processors, docs/validation.md); sampling, other processors and "
            "cache_implementation='static' are not modelled"
        )
    if workload.quant is not None:
        out.append(
            f"quant={workload.quant!r}: weight bytes from the format's layout "
            "(estimator/terms/quant.py), not loaded from a checkpoint here; the peak adds the "
            "largest dequantized block weight (torch fallback kernels), which CUDA kernels "
            "(exllama, marlin, fbgemm) do not allocate"
        )
    return out


def finetune_unchecked(spec: ModelSpec, workload: Workload) -> list[str]:
    """What no measurement checks of a fine-tuning run (issue 20)."""
    ft = workload.finetune
    if ft == "full":
        return []
    if ft == "freeze":
        return [
            "finetune='freeze': saved activations, backward FLOPs and peak checked on the "
            "reference model (decoder-only; embeddings training, or frozen with layer 0's "
            "attn_norm training); otherwise (frozen embeddings and first norm, another "
            "architecture, full checkpointing) activations and backward are counted as full "
            "training saves and runs them (an upper bound); measured on tiny HF Llama and "
            "GPT-2 too"
        ]
    out = [
        f"finetune={ft!r}: trainable parameters, gradients, optimizer states and LoRA's saved "
        "tensors checked on CPU against peft (tiny HF Llama / GPT-2); the adapters' backward "
        "transients (their input grads, the fp32 promotion of a 16-bit base's output) are not "
        "modelled"
    ]
    out.append(f"finetune={ft!r}: the forward's moments inside LoRA paths other than the last "
               "layer's FFN down and up projections (gate's, the attention's) are not "
               "modelled")  # fmt: skip
    if workload.attention_impl == "fused":
        out.append(f"flops under finetune={ft!r} with fused attention: layer 0's sdpa "
                   "backward is counted whole (checked on eager attention only)")  # fmt: skip
    if spec.implementation == "reference":
        out.append(
            "finetune on the reference model: every row measured exact on CPU "
            "(reference_model/lora.py, tests/tgauge/test_validate_lora_reference.py) but the "
            "peak of a checkpointed layer's recompute on a 16-bit base (within 2%)"
        )
    if workload.checkpointing == "full" and spec.implementation == "hf":  # issue 20c
        out.append(
            f"finetune={ft!r} with checkpointing on a Hugging Face class: measured on CPU for "
            "tiny Llama and GPT-2 (saved activations exact, the peak within 1.2%) under the "
            "checkpoint tgauge's measurement runs: kbit_prep's reentrant one (peft's "
            "use_gradient_checkpointing), else transformers' non-reentrant default enabled "
            "before get_peft_model (with their input-grad hook); the reentrant recompute's "
            "own forward transients are not modelled; other classes' checkpoint closures and "
            "CUDA: not checked"
        )
    elif workload.checkpointing == "full":
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
    if workload.kbit_prep:  # issue 20: peft's prepare_model_for_kbit_training
        out.append(
            "kbit_prep: the fp32 upcast (weights, fp32 activations, the 4-bit linears' "
            "compute-dtype casts) checked on CPU against prepare_model_for_kbit_training on "
            "tiny HF Llama and GPT-2 (bitsandbytes' CPU path: every state, activation and "
            "FLOP row exact, the peak within 0.1%); on CUDA its kernels' casts and workspaces "
            "are not checked (no GPU run)"
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


def rank_estimate(spec: ModelSpec, workload: Workload, parallel: Parallel) -> Estimate:
    """One rank (``parallel.rank``, default 0) of a training step spread over
    ``parallel.world`` ranks: its memory terms as it holds them (estimator/terms/ranks.py:
    FSDP2 padded shards, ZeRO-1's partition, tensor-parallel local widths), the peak of its
    own timeline (its unsharded gradients, FSDP2's gathered units while gathered,
    estimator/replay/peak.py), its FLOPs (the local widths) and its collectives (``comm``,
    estimator/terms/comm.py)."""
    from estimator.spec.errors import UnsupportedError
    from estimator.terms.comm import comm
    from estimator.terms.ranks import (
        Gathers,
        check_parallel,
        ddp_bucket_bytes,
        fsdp,
        local_grads,
        local_spec,
        rank_activations,
        rank_state_terms,
        tp_logits,
    )

    if workload.mode != "train":
        raise UnsupportedError(
            f"parallel= models training steps; mode={workload.mode!r} with world="
            f"{parallel.world} is not modelled per rank (fit's --tp for inference splits "
            "the layers, estimator/plan/capacity.py)"
        )
    if workload.finetune != "full":  # issue 20 x issue 18: not combined yet
        raise UnsupportedError(
            f"finetune={workload.finetune!r} with world={parallel.world} is not modelled per "
            "rank (adapters and frozen weights under FSDP2 / TP); size it on one device"
        )
    check_parallel(spec, parallel)
    local = local_spec(spec, parallel)
    sh = resolve(local, workload)
    check_supported(local, workload, sh)
    if workload.optimizer_impl != sh.optimizer_impl:
        workload = workload.model_copy(update={"optimizer_impl": sh.optimizer_impl})
    mem = rank_state_terms(spec, parallel, sh)
    mem.update({f"activations.{k}": v for k, v in rank_activations(local, sh, parallel).items()})
    orig = "fp32" if sh.master_weights else sh.dtype
    gloo = workload.device == "cpu"  # torch.distributed's CPU backend (issue 18p)
    gathers = Gathers(spec, parallel, sh.dtype, orig, gloo=gloo) if fsdp(parallel) else None
    resident = ddp_bucket_bytes(spec, parallel, sh.dtype)  # issue 18i
    rank = (local_grads(spec, parallel, sh.dtype), gathers, resident)
    from estimator.replay.optimizer_step import rank_step_temporaries

    rank += (rank_step_temporaries(spec, parallel, sh), tp_logits(spec, parallel, sh))
    peak, phase = train_peak(local, sh, mem, rank)
    from estimator.replay.rank_parts import rank_peak_parts

    parts = rank_peak_parts(local, sh, mem, rank, peak, phase)
    p = params(spec)
    whole = resolve(spec, workload)  # the unsplit model, for the textbook comparison
    return Estimate(
        spec=spec,
        workload=workload,
        params=p,
        memory=Breakdown(unit="bytes", terms=mem),
        flops=Breakdown(unit="flops", terms=rank_flops(local, sh, parallel)),
        kv_cache=Breakdown(unit="bytes", terms={}),
        peak_memory_bytes=peak,
        peak_phase=phase,
        decode=None,
        textbook=textbook(spec, whole, p.total, memory(spec, whole)),
        unchecked=_unchecked(spec, workload) + _rank_unchecked(parallel),
        parallel=parallel,
        comm=comm(spec, parallel, sh),
        peak_parts=parts,
    )


def rank_flops(local: ModelSpec, sh: Shapes, parallel: Parallel) -> dict[str, Any]:
    """FLOPs of one rank: those of the local widths, the LM head's matmuls over its V / t
    vocabulary shard (ColwiseParallel) even when the logits are gathered to V."""
    out = flops(local, sh)
    if parallel.tp > 1 and not parallel.loss_parallel:
        t = parallel.tp
        out = {k: -(-v // t) if k.endswith(".lm_head") else v for k, v in out.items()}
    return out


def _rank_unchecked(parallel: Parallel) -> list[str]:
    """What a per-rank estimate models that no CPU run checks."""
    out = [
        "parallel: per-rank memory and collectives follow torch's FSDP2 / "
        "ZeroRedundancyOptimizer / DTensor code; nccl on several GPUs (its buffers, "
        "NVLink / InfiniBand timing, overlap) is not measured, only gloo on CPU can be "
        "(tgauge validate --nproc)",
        "parallel: CUDA caching of all-gather / reduce-scatter buffers across streams "
        "(FSDP2's all_gather_copy_in and the record_stream lifetimes) is not modelled",
    ]
    if parallel.shard in ("none", "zero1") and parallel.dp > 1:
        out.append(
            "parallel: DDP's bucket count (comm.all_reduce.count) is modelled from its "
            "bucket caps after the rebuild; its bucket buffers are in the peak (one copy of "
            "every gradient), not a memory term of their own"
        )
    if parallel.loss_parallel:
        out.append("parallel: loss_parallel's collectives are read from torch's code, not run")
    if parallel.wrap == "torchtitan":
        out.append(
            "parallel: wrap='torchtitan' gives torchtitan's FSDP2 units (apply_fsdp); the loss "
            "is the model's own, computed inside its forward (reference: in the logits' dtype; "
            "HF: upcast to fp32), not torchtitan's train loop, which computes "
            "cross_entropy_loss on pred.float() after the forward returns"
        )
        if parallel.tp > 1:
            out.append("parallel: wrap='torchtitan' with tp > 1 is not measured (tp = 1 only)")
    if parallel.shard == "zero3" and parallel.dp > 1:
        out.append(
            "parallel: zero3 with checkpointing 'full' replayed 3.4% above a CPU gloo "
            "measurement (2 ranks; exact without checkpointing): FSDP2's hooks around the "
            "recompute are not modelled exactly"
        )
    out.append(
        "parallel: communication time (fit's roofline) assumes ring collectives at the GPU "
        "preset's datasheet link bandwidth (NVLink / PCIe in a node of 8, the NIC between "
        "nodes), no latency term, data-parallel collectives fully overlapped: not timed on "
        "real GPUs"
    )
    if parallel.tp > 1 and parallel.sp and parallel.sp_input == "gathered":
        out.append(
            "parallel: sp's backward replay keeps the residual stream's gradients whole "
            "[n, d] (DTensor shards them over the sequence): its peak is an upper bound"
        )
    return out


def estimate(
    spec: ModelSpec,
    workload: Workload,
    *,
    direct: bool = False,
    parallel: Parallel | None = None,
) -> Estimate:
    """All predictions for (spec, workload); SpecError when the workload cannot run (a copy
    that skipped validation is validated here). ``direct``: run the term functions rather
    than a compiled program of this structure (the same numbers; estimator/compiled/).
    ``parallel``: the step spread over ranks (estimator.spec.parallel.Parallel): the
    Estimate is then the rank ``parallel.rank``'s (``rank_estimate``); one rank (the default) is
    today's."""
    workload, applied = resolved_defaults(spec, workload)
    if parallel is not None and not parallel.single:
        spec, workload = revalidated(spec, workload)
        est = rank_estimate(spec, workload, parallel)
        return est.model_copy(update={"defaults_applied": applied})
    spec, workload = revalidated(spec, workload)
    sh = resolve(spec, workload)
    try:
        check_supported(spec, workload, sh)
    except UnsupportedError as exc:  # what is not modelled may come from the usual settings
        if not applied:
            raise
        usual = defaults_text(spec, applied)
        raise type(exc)(f"{exc} [{usual}; give these fields to size without them]") from None
    if sh.training and workload.optimizer_impl != sh.optimizer_impl:  # say which torch picks
        workload = workload.model_copy(update={"optimizer_impl": sh.optimizer_impl})
    if direct:
        raw = raw_estimate(spec, sh)
    else:
        from estimator.compiled import evaluate

        raw = evaluate(raw_estimate, spec, workload)
    return assemble(spec, workload, sh, raw).model_copy(update={"defaults_applied": applied})
