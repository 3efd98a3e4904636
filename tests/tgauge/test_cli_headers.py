"""Every column of every table the sizing commands print has a header."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
BLANK_HEADER = re.compile(r"┃\s+┃")  # a header cell holding only spaces


@pytest.mark.parametrize(
    "argv",
    [
        ["presets"],
        ["estimate", "llama-2-7b", "--mode", "decode", "--prompt-len", "64", "--new-tokens", "4",
         "--textbook"],
        ["estimate", "t5-small", "-s", "64"],
        ["fit", "gpt2-small", "--gpu", "l4", "-s", "256"],
        ["fit", "mistral-7b", "--mode", "decode", "--prompt-len", "512", "--new-tokens", "8"],
        ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--gpu", "l4"],
    ],
)  # fmt: skip
def test_no_table_has_a_blank_header(argv: list[str]) -> None:
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert not BLANK_HEADER.search(res.stdout), res.stdout
