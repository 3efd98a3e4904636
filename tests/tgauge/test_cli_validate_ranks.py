"""`tgauge validate MODEL --nproc N`: per-rank rows from real gloo ranks, --json, errors.

Oracle for the schedule: FSDP2 with reshard_after_forward=False gathers each group (root and
the L blocks) once and reduce-scatters each once (profiler/distributed/engine.py)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator import estimate
from tgauge.cli import app

pytest.importorskip("torch")

runner = CliRunner()
TINY = str(Path(__file__).parents[2] / "docs/validation/tiny-decoder.json")
N_LAYERS = 2
ARGS = ["validate", TINY, "--mode", "train", "-b", "2", "-s", "16"]


def test_validate_nproc_zero2_rows_per_rank_follow_fsdp2_schedule() -> None:
    result = runner.invoke(app, [*ARGS, "--nproc", "2", "--zero", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by = {(r["rank"], r["term"]): r for r in rows}
    for rank in (0, 1):
        assert by[(rank, "comm.all_gather.count")]["measured"] == 1 + N_LAYERS
        assert by[(rank, "comm.reduce_scatter.count")]["measured"] == 1 + N_LAYERS
        assert (
            by[(rank, "memory.weights")]["measured"] == by[(rank, "memory.gradients")]["measured"]
        )
    if "parallel" not in inspect.signature(estimate).parameters:
        assert all(r["predicted"] is None and r["verdict"] == "not modelled" for r in rows)


def test_validate_nproc_timeout_names_rank_and_exits_1() -> None:
    result = runner.invoke(app, [*ARGS, "--nproc", "2", "--zero", "3", "--timeout", "1"])
    assert result.exit_code == 1
    assert "timed out after 1 s: rank 0 in" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--zero", "2"], "need --nproc 2 or more"),
        (["--nproc", "2", "--tp", "3"], "tp=3 must divide world=2"),
        (["--nproc", "2", "--zero", "2", "--mode", "prefill"], "measures training steps"),
        (["--nproc", "2", "--zero", "2", "--sweep", "seq_len=8,16"], "measures one point"),
    ],
)
def test_validate_nproc_refuses_by_name(extra: list[str], message: str) -> None:
    args = [a for a in ARGS if a not in ("--mode", "train")] + extra
    if "--mode" not in extra:
        args += ["--mode", "train"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
