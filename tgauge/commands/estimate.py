"""`tgauge estimate MODEL`: the analytic estimate as rich tables, or JSON with --json.

Imports no torch: the estimator is pure Python.
"""

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from estimator.breakdown import Breakdown, Estimate
from estimator.spec import Workload
from tgauge.app import app, console, print_json, print_table, user_errors
from tgauge.format import (
    BYTE_UNITS_NOTE,
    FLOP_UNITS_NOTE,
    defaults_note,
    describe_workload,
    human_bytes,
    human_count,
    human_flops,
    share,
)
from tgauge.loading import load_spec
from tgauge.options import Impl, Json, with_workload
from tgauge.peak_view import peak_table

_PASSES = ("forward", "backward", "recompute")


def _layer_split(name: str) -> tuple[str, str]:
    """('decoder.layers', 'self_attn.q_proj') for a per-layer term, else (name, '')."""
    for stack in ("encoder", "decoder"):
        head = f"{stack}.layers."
        if name.startswith(head):
            return head[:-1], name[len(head) :]
    return name, ""


def _layers_of(est: Estimate, group: str) -> int:
    return dict(est.spec.stacks).get(group.split(".")[0], 0)


def kv_cache_note(est: Estimate) -> str:
    """'' or why the cache holds fewer positions than tokens seen (sliding window, chunks)."""
    from estimator.shapes import cached_positions, resolve

    w = est.workload
    if not est.kv_cache.terms or est.spec.n_decoder_layers == 0:
        return ""
    sh = resolve(est.spec, w)
    pattern, window = sh.stack("decoder").pattern, sh.stack("decoder").window
    seen = sh.prompt + w.new_tokens if w.mode == "decode" else w.seq_len
    if est.spec.arch == "encoder-decoder":
        return ""
    kept = cached_positions(pattern, window, seen)
    if kept == seen:
        return ""
    what = "sliding window" if pattern == "sliding_window" else "chunk"
    return f" (capped by the {what} of {window:,}: {kept:,} of {seen:,} positions kept)"


def summary_table(est: Estimate) -> Table:
    t = Table(
        title=f"{escape(est.spec.name)}: {describe_workload(est.spec, est.workload)}",
        show_header=False,
    )
    t.caption = (
        "the sum of all terms is neither the peak nor a bound on it: activations are freed "
        "as the backward pass or the prefill moves on, and the peak's moment can hold what no "
        "term does (the optimizer step's temporaries); the peak table shows what is live then"
    )
    t.add_column("quantity", style="bold")
    t.add_column("value", justify="right")
    t.add_row("parameters", f"{human_count(est.params.total)} ({est.params.total:,})")
    t.add_row("peak memory", f"{human_bytes(est.peak_memory_bytes)} at {est.peak_phase}")
    w = est.workload
    if w.is_training and w.optimizer != "none":
        from estimator.replay.optimizer_step import step_temporaries_bytes
        from estimator.shapes import resolve

        temporaries = human_bytes(step_temporaries_bytes(est.spec, resolve(est.spec, w)))
        t.add_row("optimizer", f"{w.optimizer}, {w.optimizer_impl} step on {w.device}")
        t.add_row("optimizer step temporaries", temporaries)
    t.add_row("sum of all terms (not all live)", human_bytes(est.memory.total))
    if est.kv_cache.terms:
        t.add_row("KV cache", human_bytes(est.kv_cache.total) + kv_cache_note(est))
    for p in _PASSES:
        if est.flops.group(p):
            t.add_row(f"FLOPs {p}", human_flops(est.flops.group(p)))
    t.add_row("FLOPs total", human_flops(est.flops.total))
    return t


def _own_ops(leaf: str, leaves: set[str]) -> str:
    """A term named after a module that also has child terms holds what the module's own code
    saves (ffn: the inputs of act(gate) * up); say so, so it does not read as a subtotal."""
    return (
        f"{leaf} (own ops, not a subtotal)"
        if any(x.startswith(leaf + ".") for x in leaves)
        else leaf
    )


def memory_table(est: Estimate) -> Table:
    mem = est.memory
    t = Table(
        title="Memory by term (every term; not all live at once: see the peak table)",
        caption=BYTE_UNITS_NOTE,
    )
    t.add_column("term")
    t.add_column("bytes", justify="right")
    t.add_column("share", justify="right")
    leaves = {_layer_split(n.removeprefix("activations."))[1] for n in mem.terms}
    seen: set[str] = set()
    for name, value in mem.terms.items():
        group, leaf = _layer_split(name.removeprefix("activations."))
        if leaf:
            full_group = f"activations.{group}"
            if full_group not in seen:
                seen.add(full_group)
                sub = mem.group(full_group)
                label = f"{full_group} (x{_layers_of(est, group)} layers, subtotal)"
                t.add_row(f"[bold]{label}[/]", human_bytes(sub), share(sub, mem.total))
            name = f"  {_own_ops(leaf, leaves)}"
        t.add_row(name, human_bytes(value), share(value, mem.total))
    t.add_row("[bold]total[/]", human_bytes(mem.total), "100.0%")
    return t


def _by_module(flops: Breakdown) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    for name, value in flops.terms.items():
        p, module = name.split(".", 1)
        rows.setdefault(module, {})[p] = value
    return rows


def flops_table(est: Estimate) -> Table:
    fl = est.flops
    passes = [p for p in _PASSES if fl.group(p)]
    t = Table(title="FLOPs by term (matmuls only, 2 per multiply-add)", caption=FLOP_UNITS_NOTE)
    t.add_column("module")
    for p in passes:
        t.add_column(p, justify="right")
    t.add_column("share", justify="right")
    for module, by_pass in _by_module(fl).items():
        row_total = sum(by_pass.values())
        group, leaf = _layer_split(module)
        label = f"{group}.{leaf} (x{_layers_of(est, group)})" if leaf else module
        cells = [human_flops(by_pass[p]) if p in by_pass else "" for p in passes]
        t.add_row(label, *cells, share(row_total, fl.total))
    t.add_row("[bold]total[/]", *[human_flops(fl.group(p)) for p in passes], "100.0%")
    return t


def decode_table(est: Estimate) -> Table:
    dec = est.decode
    n = len(dec.per_step_flops)
    t = Table(title=f"Decode: prefill + {n} one-token steps", caption=FLOP_UNITS_NOTE)
    t.add_column("FLOPs of")
    t.add_column("with KV cache", justify="right")
    t.add_column("without cache", justify="right")
    t.add_row("prefill", human_flops(dec.prefill_flops), human_flops(dec.prefill_flops))
    t.add_row(
        "first step",
        human_flops(dec.per_step_flops[0]),
        human_flops(dec.per_step_flops_without_cache[0]),
    )
    t.add_row(
        "last step",
        human_flops(dec.per_step_flops[-1]),
        human_flops(dec.per_step_flops_without_cache[-1]),
    )
    t.add_row(
        "total",
        human_flops(dec.total_with_cache_flops),
        human_flops(dec.total_without_cache_flops),
    )
    ratio = dec.total_without_cache_flops / dec.total_with_cache_flops
    t.add_row("without / with", "", f"{ratio:.2f}x")
    return t


TEXTBOOK_SOURCES = (
    "params L x 3 x (d^2 + d): the project's seed notes (Q, K, V projections with biases only). "
    "activations b x L x (3 T d + T^2 + T d): the seed notes (Q, K, V, the T x T scores, the "
    "attention output per layer). KV cache 2 x b x L x T x d x bytes: keys and values of every "
    "layer with all heads cached (Pope et al. 2022, Efficiently Scaling Transformer Inference, "
    "sec. 2; GQA/MQA models cache h_kv of h heads). T: tokens of one sequence."
)


def textbook_table(est: Estimate) -> Table:
    t = Table(title="Back-of-envelope formulas vs tgauge's exact count", caption=TEXTBOOK_SOURCES)
    for col in ("quantity", "formula", "back-of-envelope", "exact", "exact / formula"):
        t.add_column(col, justify="left" if col in ("quantity", "formula") else "right")
    for term in est.textbook.terms:
        fmt = human_count if term.name == "params" else human_bytes
        t.add_row(term.name, term.formula, fmt(term.textbook), fmt(term.exact), f"{term.ratio:.3f}")
    return t


def render(est: Estimate, textbook: bool = False, note: str | None = None) -> None:
    if note:
        console.print(f"[dim]{escape(note)}[/]", highlight=False)
    print_table(summary_table(est))
    terms, peak = est.memory.terms, est.peak_memory_bytes
    print_table(peak_table(est.spec, est.workload, terms, peak, est.peak_phase, "Memory"))
    print_table(memory_table(est))
    print_table(flops_table(est))
    if est.decode is not None:
        print_table(decode_table(est))
    if textbook:
        print_table(textbook_table(est))
    if est.unchecked:
        console.print("[dim]Not checked by any measurement:[/]")
        for line in est.unchecked:
            console.print(f"[dim]  - {line}[/]", highlight=False)


@app.command(
    "estimate",
    epilog="Example: tgauge estimate llama-2-7b --mode decode --dtype fp16 --prompt-len 2048",
)
@user_errors
@with_workload(preset_defaults=True)
def estimate_command(
    model: Annotated[str, typer.Argument(help="preset name, spec file, or HF config.json")],
    json_out: Json = False,
    textbook: Annotated[
        bool,
        typer.Option(
            "--textbook", help="also compare with back-of-envelope formulas (and their sources)"
        ),
    ] = False,
    impl: Impl = None,
    *,
    workload: Workload,  # injected by with_workload
    defaults_applied: dict[str, object],  # injected by with_workload
) -> None:
    """Predict parameters, memory (with its peak), KV cache and FLOPs of MODEL."""
    from estimator.estimate import estimate
    from tgauge.recurrent_view import estimate_recurrent, is_recurrent

    if is_recurrent(model):  # ELMo, an LSTM seq2seq: estimator/spec/recurrent.py
        estimate_recurrent(model, workload, json_out)
        return
    est = estimate(load_spec(model, impl), workload)
    if json_out:
        print_json(est)
    else:
        render(est, textbook, defaults_note(model, defaults_applied))
