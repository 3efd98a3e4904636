"""`tgauge fit --wrap` / `validate --wrap`: torchtitan's FSDP2 units in the plan, the peak table's
named rows, and the options refused without FSDP2."""

from __future__ import annotations

from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
ARGS = ["fit", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "1024", "--mode", "train", "-s",
        "4096", "--dtype", "bf16", "--master-weights", "--attention", "fused", "--checkpointing",
        "full"]  # fmt: skip


def test_fit_wrap_torchtitan_names_the_layout_and_the_gathered_units() -> None:
    res = runner.invoke(app, [*ARGS, "--zero", "3", "--wrap", "torchtitan"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "wrap=torchtitan" in res.output
    assert "FSDP2 gathered parameters" in res.output and "logits [n, V]" in res.output
    assert "(forward)" in res.output  # at the loss: logits, head unit and its all-gather output


def test_fit_wrap_without_fsdp2_is_one_line_exit_2() -> None:
    res = runner.invoke(app, [*ARGS, "--zero", "1", "--wrap", "torchtitan"])
    assert res.exit_code == 2
    assert "--wrap torchtitan names FSDP2 units" in res.output


def test_validate_wrap_without_fsdp2_is_one_line_exit_2() -> None:
    args = ["validate", "docs/validation/tiny-decoder.json", "--mode", "train", "--nproc", "2"]
    res = runner.invoke(app, [*args, "--zero", "1", "--wrap", "torchtitan"])
    assert res.exit_code == 2
    assert "--wrap torchtitan names FSDP2 units" in res.output
