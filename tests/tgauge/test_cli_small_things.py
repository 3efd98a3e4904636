"""Small things a newcomer meets first (issue 23 item 8)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from estimator.spec import Workload
from tgauge.cli import app
from tgauge.commands.validate import point_label

runner = CliRunner()
COMMANDS = ["estimate", "fit", "sweep", "report", "profile", "validate", "presets"]


def test_tgauge_alone_prints_help_and_succeeds() -> None:
    r = runner.invoke(app, [])
    assert r.exit_code == 0
    assert "Usage:" in r.stdout and "estimate" in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_bool_type_nor_braced_argument(command: str) -> None:
    r = runner.invoke(app, [command, "--help"])
    assert r.exit_code == 0
    assert "<bool>" not in r.stdout
    usage = next(line for line in r.stdout.splitlines() if "Usage:" in line)
    assert "{" not in usage
    if command in ("estimate", "fit", "profile"):
        assert "MODEL" in usage


def test_a_long_caption_is_printed_whole_below_a_narrow_table() -> None:
    r = runner.invoke(app, ["estimate", "gpt2-small", "-s", "64"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    phrase = "the sum of all terms is neither the peak nor a bound on it"
    assert phrase in r.stdout  # on one line, not wrapped to the summary table's width


def test_matrix_point_label_states_mode_b_and_s_once() -> None:
    w = Workload(batch_size=2, seq_len=32)
    assert point_label("hf gpt2 train eager b=2 s=32", w) == "hf gpt2 train eager b=2 s=32"
    assert point_label("gpt2-small", w) == "gpt2-small train b=2 s=32"
