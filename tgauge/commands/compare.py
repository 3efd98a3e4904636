"""`tgauge compare`: Transformers beside recurrent models (the study notes' ELMo / GPT / BERT
comparison): parameters, training FLOPs and memory, the state inference carries, the
sequential steps and a roofline step time that respects the recurrence, against sequence
length; Table 1 of "Attention Is All You Need" symbolically and at these lengths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tgauge.app import UserError, app, console, note, print_json, require, user_errors
from tgauge.format import human_bytes, human_count, human_flops, human_seconds


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"{option}={text!r} is invalid: give integers separated by commas"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise UserError(f"{option}={text!r} is invalid: give positive integers, e.g. 128,512")
    return values


@app.command(
    "compare",
    epilog="Example: tgauge compare elmo,gpt2-small,bert-base --seq-lens 128,512 --chart cmp.png",
)
@user_errors
def compare_command(
    models: Annotated[
        str, typer.Argument(help="models, comma-separated: recurrent and Transformer presets")
    ] = "elmo,gpt2-small,bert-base",
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", "-s", help="sequence lengths, comma-separated")
    ] = "128,256,512",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 8,
    gpu: Annotated[str, typer.Option("--gpu", help="GPU preset for the roofline times")] = (
        "a100-80gb"
    ),
    chart: Annotated[
        Path | None, typer.Option("--chart", help="write the charts to this .png / .svg")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Transformer vs LSTM at (about) equal parameters: one fp32 AdamW training step each."""
    from estimator.plan.compare import compare
    from estimator.plan.hardware import get_gpu
    from estimator.terms.recurrent import TABLE1, UNCHECKED, table1_numbers

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise UserError("MODELS is empty: give presets separated by commas, e.g. elmo,gpt2-small")
    lens = _ints(seq_lens, "--seq-lens")
    result = compare(names, lens, batch_size, get_gpu(gpu))
    d = 768
    table1 = {n: table1_numbers(n, d) for n in lens}
    if json_out:
        print_json(
            {
                "rows": [r.model_dump() for r in result.rows],
                "skipped": [{"model": m, "seq_len": s, "why": w} for m, s, w in result.skipped],
                "table1": {"symbolic": TABLE1, "d": d, "numbers": table1},
                "gpu": gpu,
                "unchecked": list(UNCHECKED),
            }
        )
    else:
        console.print(_rows_table(result.rows, gpu, batch_size))
        console.print(_table1(lens, d, table1))
        for r in _longest_recurrent(result.rows):
            live = ", ".join(f"{k} {human_bytes(v)}" for k, v in r.peak_parts.items())
            console.print(
                f"{r.name} at T={r.seq_len}: live at the peak ({r.peak_phase}): {live}",
                highlight=False,
            )
        for m, s, why in result.skipped:
            note(f"{m} at seq_len={s} skipped: {why}")
        for line in UNCHECKED:
            note(f"unchecked: {line}")
    if chart is not None:
        require("matplotlib", "compare --chart")
        _chart(result.rows, chart)
        if not json_out:
            console.print(f"charts written to {chart}")


def _rows_table(rows: list[Any], gpu: str, b: int) -> Any:
    from rich.table import Table

    table = Table(
        title=f"Transformer vs recurrent: one fp32 AdamW training step, b={b}, {gpu} roofline",
        caption="(rnn): recurrent. memory: the estimated peak of the step and its phase (an "
        "LSTM LM's from estimator/replay/recurrent_step.py; other recurrent models: the sum of "
        "terms). state: KV cache after T tokens, or h and c "
        "of every layer. sequential: dependent steps in all (per layer)",
    )
    table.add_column("model", no_wrap=True)
    table.add_column("T", justify="right", no_wrap=True, min_width=4)
    for column in ("params", "train FLOPs", "train memory", "state", "sequential", "step time"):
        table.add_column(column, justify="right")
    for r in rows:
        kind = f"peak ({r.peak_phase})" if r.train_memory_kind == "peak" else "sum"
        table.add_row(
            r.name if r.family == "transformer" else f"{r.name} (rnn)",
            str(r.seq_len),
            human_count(r.params),
            human_flops(r.train_flops),
            f"{human_bytes(r.train_memory_bytes)} {kind}",
            f"{human_bytes(r.state_bytes)} {'kv' if r.state_kind == 'kv cache' else 'h,c'}",
            f"{r.sequential_steps} ({r.sequential_per_layer}/l)",
            f"{human_seconds(r.step_time_s)} {r.bound}",
        )
    return table


def _longest_recurrent(rows: list[Any]) -> list[Any]:
    """Each recurrent model's row at its longest T, where its peak is modelled."""
    longest: dict[str, Any] = {}
    for r in rows:
        if r.peak_parts is not None and r.seq_len >= longest.get(r.name, r).seq_len:
            longest[r.name] = r
    return list(longest.values())


def _table1(lens: list[int], d: int, numbers: dict[int, Any]) -> Any:
    from rich.table import Table

    from estimator.terms.recurrent import TABLE1

    n = max(lens)
    table = Table(
        title=f'Table 1 of "Attention Is All You Need" (per layer), evaluated at n={n}, d={d}',
        caption="k = 3: convolution width; r = 256: restricted attention's neighbourhood",
    )
    table.add_column("layer type", no_wrap=True)
    for column in ("complexity", "sequential ops", "max path"):
        table.add_column(column, no_wrap=True)
        table.add_column(f"at n={n}", justify="right", no_wrap=True)
    for kind, orders in TABLE1.items():
        at = numbers[n][kind]
        table.add_row(
            kind,
            f"O({orders['complexity']})",
            f"{at['complexity']:.3g}",
            f"O({orders['sequential']})",
            f"{at['sequential']:g}",
            f"O({orders['path']})",
            f"{at['path']:g}",
        )
    return table


def _chart(rows: list[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("train memory (GiB)", lambda r: r.train_memory_bytes / 2**30),
        ("train FLOPs (TFLOP)", lambda r: r.train_flops / 1e12),
        ("sequential steps", lambda r: r.sequential_steps),
        ("roofline step time (ms)", lambda r: r.step_time_s * 1e3),
    )
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    names = list(dict.fromkeys(r.name for r in rows))
    for ax, (label, value) in zip(axes.flat, panels, strict=True):
        for name in names:
            mine = [r for r in rows if r.name == name]
            ax.plot([r.seq_len for r in mine], [value(r) for r in mine], marker="o", label=name)
        ax.set_xlabel("sequence length T (tokens)")
        ax.set_ylabel(label)
        if label == "sequential steps":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle("Transformer vs LSTM at equal parameters (training step)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
