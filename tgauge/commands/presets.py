"""`tgauge presets`: the built-in architectures with their exact parameter counts, and the GPUs
`tgauge fit` knows."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tgauge.app import app, print_json, print_table, user_errors
from tgauge.format import human_bytes, human_count


@app.command("presets", epilog="Example: tgauge presets --json")
@user_errors
def presets_command(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="{models: [{name, arch, n_params, spec}], gpus: [{name, aliases, ...GPU fields}]}",
        ),
    ] = False,
) -> None:
    """List the built-in model presets (exact parameter counts) and GPU presets (for `fit`)."""
    from estimator.plan.hardware import GPUS
    from estimator.spec.presets import PRESETS
    from estimator.terms.params import params

    rows = [(name, spec, params(spec).total) for name, spec in PRESETS.items()]
    if as_json:
        print_json(
            {
                "models": [
                    {"name": name, "arch": spec.arch, "n_params": n, "spec": spec.model_dump()}
                    for name, spec, n in rows
                ],
                "gpus": [
                    {"name": name, "aliases": _aliases(name), **gpu.model_dump(exclude={"name"})}
                    for name, gpu in GPUS.items()
                ],
            }
        )
        return
    print_table(_models_table(rows))
    print_table(_gpus_table())


def _models_table(rows: list[tuple[str, Any, int]]) -> Any:
    from rich.table import Table

    table = Table(
        title="tgauge presets: models",
        caption="layers: encoder/decoder; heads: query/key-value; params exact, then short",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("arch", no_wrap=True)
    for column in ("layers", "d_model", "heads", "d_ff", "vocab", "params", "params (short)"):
        table.add_column(column, justify="right", no_wrap=column.startswith("params"))
    for name, spec, n in rows:
        table.add_row(
            name,
            spec.arch,
            f"{spec.n_encoder_layers}/{spec.n_decoder_layers}",
            str(spec.d_model),
            f"{spec.n_heads}/{spec.n_kv_heads}",
            str(spec.d_ff),
            f"{spec.vocab_size:,}" if spec.vocab_size else "-",
            f"{n:,}",
            human_count(n),
        )
    return table


def _aliases(name: str) -> list[str]:
    from estimator.plan.hardware import _ALIASES

    return sorted(alias for alias, target in _ALIASES.items() if target == name)


def _gpus_table() -> Any:
    from rich.table import Table

    from estimator.plan.hardware import GPUS, MATH_DTYPES

    table = Table(
        title="tgauge presets: GPUs (tgauge fit --gpu NAME)",
        caption="memory: what the card reports (nvidia-smi memory.total), not its marketed GB; "
        "dense peak TFLOP/s per math dtype (10^12 FLOP/s, no sparsity; - where the "
        "part has no such unit); bandwidth in TB/s (10^12 bytes/s); sources: --json",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("alias", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("bandwidth TB/s", justify="right")
    for dtype in MATH_DTYPES:
        table.add_column(dtype, justify="right")
    for name, gpu in GPUS.items():
        peaks = gpu.peak_flops_per_s
        table.add_row(
            name,
            ", ".join(_aliases(name)) or "-",
            human_bytes(gpu.total_bytes),
            f"{gpu.bandwidth_bytes_per_s / 10**12:g}",
            *("-" if peaks.get(d) is None else f"{peaks[d] / 10**12:g}" for d in MATH_DTYPES),
        )
    return table
