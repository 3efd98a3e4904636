"""`tgauge profile file.py:factory` (issue 23): your own nn.Module, measured on CPU and as a
meta dry run; what tgauge cannot know about it is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
from typer.testing import CliRunner  # noqa: E402

from tgauge.cli import app  # noqa: E402

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mymodel.py"
FAST = ["-b", "1", "-s", "16", "--repeats", "1", "--json"]


def _profile(model: str, *extra: str) -> dict:
    r = runner.invoke(app, ["profile", model, *FAST, *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_example_params_match_its_numel(device: str) -> None:
    import runpy

    import torch

    model, _ = runpy.run_path(str(EXAMPLE))["build"](batch_size=1, seq_len=16)
    out = _profile(f"{EXAMPLE}:build", "--device", device)
    assert out["n_params"]["total"] == sum(p.numel() for p in model.parameters())
    assert out["implementation"] == "user mymodel.py:build"
    # AdamW's two fp32 states, as measured
    assert out["optimizer"]["terms"]["exp_avg"] == 4 * sum(p.numel() for p in model.parameters())
    assert torch.device(out["device"]).type == device


def test_factory_without_inputs_gets_token_ids_below_its_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Embedding(7, 8), nn.Linear(8, 7))\n"
    )
    out = _profile(f"{path}:make", "--mode", "prefill")
    assert out["n_params"]["total"] == 7 * 8 + 8 * 7 + 7


@pytest.mark.parametrize(
    ("body", "suffix", "message"),
    [
        ("x = 1\n", ":build", "has no callable 'build'"),
        ("def build():\n    return 3\n", ":build", "returned int"),
        (
            "from torch import nn\ndef build():\n    return nn.Linear(4, 4)\n",
            ":build",
            "does not start with an nn.Embedding",
        ),
        ("def build():\n    pass\n", "", "name the callable"),
    ],
)
def test_what_tgauge_cannot_know_is_refused_in_one_line(
    tmp_path: Path, body: str, suffix: str, message: str
) -> None:
    path = tmp_path / "m.py"
    path.write_text(body)
    r = runner.invoke(app, ["profile", f"{path}{suffix}", "-s", "8"])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output
