"""`tgauge validate CONFIG.json --mode decode --engine hf-generate` (issue 19): the estimate
against transformers' own generate(), the engine a config.json decodes with by default, and
the engines validate does not run refused in one line."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")
from hf_tiny import CONFIGS  # noqa: E402

from tgauge.cli import app  # noqa: E402

runner = CliRunner()
SIZES = ["-b", "2", "-s", "64", "--prompt-len", "64", "--new-tokens", "2", "--attention", "fused"]


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "config.json"
    config = dict(CONFIGS["llama"], vocab_size=32000, max_position_embeddings=1024)
    path.write_text(json.dumps(config))
    return str(path)


def _rows(out) -> dict:
    assert out.exit_code == 0, out.output
    return {r["term"]: r for r in json.loads(out.stdout[out.stdout.index("[") :])}


@pytest.mark.parametrize("engine", [[], ["--engine", "hf-generate"]])
def test_validate_decode_runs_generate_by_default_for_a_config(config_path, engine) -> None:
    args = ["validate", config_path, "--mode", "decode", *SIZES, "--device", "cpu", "--json"]
    rows = _rows(runner.invoke(app, [*args, *engine]))
    # generate(max_new_tokens=3): the prefill and 2 one-token steps, the cache after each
    assert [r["verdict"] for t, r in rows.items() if t.startswith("kv_cache.")] == ["exact"] * 3
    peak = rows["peak_memory"]
    assert abs(peak["predicted"] - peak["measured"]) <= 0.02 * peak["measured"]


def test_validate_refuses_engines_it_does_not_run(config_path) -> None:
    vllm = runner.invoke(app, ["validate", config_path, "--mode", "decode", "--engine", "vllm"])
    assert vllm.exit_code == 2 and "vllm" in vllm.output
    preset = runner.invoke(
        app, ["validate", "gpt2-small", "--mode", "decode", "--engine", "hf-generate"]
    )
    assert preset.exit_code == 2 and "generate()" in preset.output
