"""`tgauge presets`: the built-in architectures with their exact parameter counts."""

from __future__ import annotations

from typing import Annotated

import typer

from tgauge.app import app, console, print_json, user_errors
from tgauge.format import human_count


@app.command("presets")
@user_errors
def presets_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="a JSON list of {name, arch, n_params, spec}")
    ] = False,
) -> None:
    """List the built-in model presets and their exact parameter counts."""
    from rich.table import Table

    from estimator.params import params
    from estimator.presets import PRESETS

    rows = [(name, spec, params(spec).total) for name, spec in PRESETS.items()]
    if as_json:
        print_json(
            [
                {"name": name, "arch": spec.arch, "n_params": n, "spec": spec.model_dump()}
                for name, spec, n in rows
            ]
        )
        return
    table = Table(
        title="tgauge presets",
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
    console.print(table)
