"""`tgauge estimate` of a recurrent preset (estimator/spec/recurrent.py): its parameters per
component, the memory terms of a training step, FLOPs, the carried state and the sequential
depth, with what is not checked said beside them."""

from __future__ import annotations

from typing import Any

from tgauge.app import UserError, console, note, print_json
from tgauge.format import human_bytes, human_count, human_flops

#: what a published count leaves out, per preset
PUBLISHED = {
    "elmo": "published: 93.6M (Peters et al. 2018), the softmax over the 793,471-word "
    "vocabulary left out (as here: head_vocab 0)",
    "lstm-seq2seq": "published: 384M (Sutskever et al. 2014, section 3.4), the 80,000-word "
    "softmax included",
}


def is_recurrent(model: str) -> bool:
    from estimator.spec.recurrent import RECURRENT_PRESETS

    return model.lower() in RECURRENT_PRESETS


def estimate_recurrent(model: str, workload: Any, json_out: bool) -> None:
    """Print (or --json) the recurrent estimate of preset ``model`` for ``workload``."""
    from estimator.plan.compare import recurrent_estimate
    from estimator.spec.dtypes import BITS
    from estimator.spec.recurrent import get_recurrent_preset

    if workload.mode != "train":
        raise UserError(
            f"--mode {workload.mode} is not modelled for recurrent models ({model}); use --mode "
            "train (the state inference carries is reported there)"
        )
    if workload.dtype not in ("fp32", "fp16", "bf16") or workload.autocast:
        raise UserError(
            f"--dtype {workload.dtype}{' with autocast' if workload.autocast else ''} is not "
            f"modelled for recurrent models ({model}); use fp32, fp16 or bf16 weights"
        )
    est = recurrent_estimate(
        get_recurrent_preset(model),
        workload.batch_size,
        workload.seq_len,
        BITS[workload.dtype] // 8,
        workload.optimizer,
    )
    if json_out:
        print_json(est)
        return
    from rich.table import Table

    spec = est.spec
    title = (
        f"{spec.name}: {spec.n_layers}-layer {spec.cell.upper()} (H={spec.hidden}"
        f"{f', P={spec.proj_size}' if spec.proj_size else ''}, {spec.bidirectional} directions)"
        f", train b={est.batch} s={est.seq_len} {workload.dtype} {workload.optimizer}"
    )
    console.print(title, highlight=False)
    params = Table(title="parameters", caption=PUBLISHED.get(spec.name))
    params.add_column("component")
    params.add_column("params", justify="right")
    for name, n in est.params.terms.items():
        params.add_row(name, f"{n:,}")
    params.add_row("total", f"{est.params.total:,} ({human_count(est.params.total)})")
    console.print(params)
    memory = Table(
        title="memory terms of a training step",
        caption="every term; not all live at once (the peak below)",
    )
    memory.add_column("term")
    memory.add_column("bytes", justify="right")
    for name, n in est.memory.terms.items():
        memory.add_row(name, human_bytes(n))
    memory.add_row("sum of terms", human_bytes(est.memory.total))
    console.print(memory)
    if est.peak is not None:
        peak = Table(
            title=f"training step peak: {human_bytes(est.peak.peak_bytes)} in {est.peak.phase}",
            caption="live at the peak (estimator/replay/recurrent_step.py); highest per phase: "
            + ", ".join(f"{k} {human_bytes(v)}" for k, v in est.peak.by_phase.items())
            + " above the baseline",
        )
        peak.add_column("live at the peak")
        peak.add_column("bytes", justify="right")
        for name, n in est.peak.parts.items():
            peak.add_row(name, human_bytes(n))
        console.print(peak)
    console.print(
        f"FLOPs: forward {human_flops(est.forward_flops.total)}, training step "
        f"{human_flops(est.train_flops)} (3 x forward); state carried in inference "
        f"{human_bytes(est.state_bytes)} (h and c, constant in T); sequential steps "
        f"{est.sequential_steps} ({est.sequential_per_layer} per layer; self-attention: 1)",
        highlight=False,
    )
    for line in est.unchecked:
        note(f"unchecked: {line}")
