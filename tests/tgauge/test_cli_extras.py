"""A command whose optional dependency is missing exits 2 with one line naming the extra to
install, before doing anything (no repeated per-point errors, no partial report).

Absence is simulated honestly: a ``None`` entry in ``sys.modules`` makes ``import NAME`` raise
ImportError, exactly as for a package that is not installed. The torch-less case is also run
from the installed wheel in a fresh venv (test_install.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip
HF_TINY = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 61,
           "n_positions": 64}  # fmt: skip


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "config.json").write_text(json.dumps(HF_TINY))
    return tmp_path


def _one_error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


CASES = [
    ("torch", ["validate", "{d}/tiny.json", "-s", "16"], "tgauge[profile]"),
    ("torch", ["validate", "--matrix", "--json"], "tgauge[profile]"),
    ("torch", ["profile", "{d}/tiny.json", "-s", "16"], "tgauge[profile]"),
    ("torch", ["profile", "{d}/config.json", "-s", "16"], "tgauge[profile]"),
    ("transformers", ["profile", "{d}/config.json", "-s", "16"], "tgauge[hf]"),
    (
        "matplotlib",
        ["report", "--model", "{d}/tiny.json", "-s", "16", "--out", "{d}/r"],
        "tgauge[report]",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("module", "argv", "extra"), CASES)
def test_missing_module_names_its_extra(monkeypatch, files, module, argv, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` -> ImportError
    line = _one_error_line(runner.invoke(app, [a.format(d=files) for a in argv]))
    assert f"needs {module}" in line and f"pip install '{extra}'" in line, line
    assert not (files / "r").exists()  # the report wrote nothing


def test_report_without_matplotlib_keeps_an_existing_folder_untouched(monkeypatch, files):
    out = files / "r"
    out.mkdir()
    (out / "report.md").write_text("an earlier report")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = ["report", "--model", str(files / "tiny.json"), "-s", "16", "--out", str(out)]
    _one_error_line(runner.invoke(app, argv))
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "an earlier report"


def test_report_of_a_sweep_needs_no_matplotlib(monkeypatch, tmp_path):
    sweep_dir = tmp_path / "sweep"
    argv = ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--out", str(sweep_dir)]
    assert runner.invoke(app, argv).exit_code == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "r"
    r = runner.invoke(app, ["report", "--sweep", str(sweep_dir / "sweep.json"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
