"""Finding things: a Hub id read from the local Hugging Face cache (else the matching preset is
suggested), GPUs in `tgauge presets`, `--version`, an example in every command's help, no
library warnings in the output, and a progress display on stderr for validate and profile."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from estimator.spec.presets import get_preset
from estimator.terms.params import params
from tgauge.cli import app
from tgauge.loading import closest_preset, hub_cache_dir

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

# config.json of meta-llama/Meta-Llama-3-8B (hf.co/meta-llama/Meta-Llama-3-8B, as published)
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0", "use_cache": True, "vocab_size": 128256,
}  # fmt: skip
TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip
HF_TINY = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 61,
           "n_positions": 64, "bos_token_id": 50256, "eos_token_id": 50256}  # fmt: skip


def _cache_model(hub: Path, repo_id: str, revision: str, config: dict, main: bool = True) -> Path:
    """Lay out a model as huggingface_hub's cache does: refs/main -> snapshots/<rev>/."""
    folder = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    if main:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(revision)
    return snapshot / "config.json"


def _estimate(model: str, env: dict[str, str]) -> dict:
    r = runner.invoke(app, ["estimate", model, "-s", "32", "--json"], env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_hub_id_reads_config_of_refs_main_from_hf_hub_cache(tmp_path):
    small = LLAMA3_8B | {"num_hidden_layers": 2}
    _cache_model(tmp_path, "meta-llama/Meta-Llama-3-8B", "old", small, main=False)
    _cache_model(tmp_path, "meta-llama/Meta-Llama-3-8B", "9a1b2c", LLAMA3_8B)
    est = _estimate("meta-llama/Meta-Llama-3-8B", {"HF_HUB_CACHE": str(tmp_path)})
    assert est["spec"]["name"] == "meta-llama/Meta-Llama-3-8B"
    # the published config gives the preset's exact count (refs/main, not the other snapshot)
    assert est["params"]["total"] == params(get_preset("llama-3-8b")).total == 8_030_261_248


def test_hub_id_found_under_hf_home_without_refs_and_in_any_case(tmp_path):
    _cache_model(tmp_path / "hub", "org/Tiny-GPT", "abc", HF_TINY, main=False)
    env = {"HF_HUB_CACHE": "", "HUGGINGFACE_HUB_CACHE": "", "HF_HOME": str(tmp_path)}
    assert _estimate("org/tiny-gpt", env)["spec"]["n_decoder_layers"] == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HF_HUB_CACHE": "/a/hub"}, "/a/hub"),
        ({"HUGGINGFACE_HUB_CACHE": "/b"}, "/b"),
        ({"HF_HOME": "/c"}, "/c/hub"),
        ({"XDG_CACHE_HOME": "/d"}, "/d/huggingface/hub"),
        ({}, "~/.cache/huggingface/hub"),
    ],
)
def test_hub_cache_dir_follows_huggingface_hub_order(monkeypatch, env, expected):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hub_cache_dir() == Path(expected).expanduser()


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("meta-llama/Meta-Llama-3-8B", "use the preset 'llama-3-8b', or give the path to its"),
        ("meta-llama/Llama-2-34b-hf", "tgauge never downloads: give the path to its config.json"),
    ],
)
def test_hub_id_not_in_cache_suggests_preset_and_config_path(tmp_path, model, fragment):
    r = runner.invoke(app, ["fit", model, "--gpu", "h100"], env={"HF_HUB_CACHE": str(tmp_path)})
    assert r.exit_code == 2 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert "neither a file nor a model in the local Hugging Face cache" in line, line
    assert str(tmp_path) in line and fragment in line, line


@pytest.mark.parametrize(
    ("hub_id", "preset"),
    [
        ("meta-llama/Llama-2-7b-hf", "llama-2-7b"),
        ("mistralai/Mistral-7B-v0.1", "mistral-7b"),
        ("openai-community/gpt2", "gpt2-small"),
        ("openai-community/gpt2-xl", "gpt2-xl"),
        ("google-bert/bert-base-uncased", "bert-base"),
        ("google-t5/t5-small", "t5-small"),
        ("google/vit-base-patch16-224", "vit-b-16"),
        ("meta-llama/Llama-2-13b-hf", "llama-2-13b"),  # presets of issue 22
        ("tiiuae/falcon-7b", "falcon-7b"),
        ("meta-llama/Llama-2-34b-hf", None),  # another size
        ("tiiuae/falcon-40b", None),  # a size without a preset
        ("FacebookAI/roberta-base", None),
    ],
)
def test_closest_preset_matches_family_and_size(hub_id, preset):
    assert closest_preset(hub_id) == preset


def test_version_flag_prints_the_package_version():
    from tgauge import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"tgauge {__version__}\n"


COMMANDS = ["estimate", "fit", "sweep", "presets", "validate", "profile", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example_that_parses(command):
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    (line,) = [x for x in r.stdout.splitlines() if "Example: tgauge" in x]
    argv = line.split("Example: tgauge ")[1].split()
    assert argv[0] == command
    # the example's options exist: click parses them (--help stops before running)
    parsed = runner.invoke(app, [*argv, "--help"])
    assert parsed.exit_code == 0, parsed.output


def test_presets_lists_gpus_with_memory_and_peaks():
    from estimator.plan.hardware import GPUS

    r = runner.invoke(app, ["presets"], env={"COLUMNS": "160"})
    assert r.exit_code == 0
    for name in GPUS:
        assert any(line.startswith(f"│ {name} ") for line in r.stdout.splitlines()), name
    row = next(line for line in r.stdout.splitlines() if line.startswith("│ h100-sxm "))
    # memory as the card reports it (81,559 MiB), peaks and bandwidth from the datasheet
    assert "79.65 GiB" in row and "989.5" in row and "3.35" in row


def test_profile_prints_no_library_warnings(tmp_path):
    """fvcore's import (torch.jit.script FutureWarning) and transformers (its advice on the
    config, the deprecated past_key_values) print nothing; one process, to import torch once."""
    pytest.importorskip("fvcore")
    pytest.importorskip("transformers")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "config.json").write_text(json.dumps(HF_TINY))
    runs = [
        ["profile", "tiny.json", "--mode", "prefill", "-s", "8", "--repeats", "1", "--json"],
        ["profile", "config.json", "--mode", "decode", "-s", "8", "--new-tokens", "2", "--json"],
    ]
    code = (
        "import sys; from tgauge.cli import app\n"
        f"for argv in {runs!r}:\n"
        "    app(argv, standalone_mode=False)\n"
        "    print('<end>')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    outputs = r.stdout.split("<end>")
    assert len(outputs) == 3 and all(json.loads(text) for text in outputs[:2])


def _terminal(monkeypatch) -> io.StringIO:
    """Make stderr a terminal that rich draws on, and return what it receives."""
    buffer = io.StringIO()
    monkeypatch.setattr(
        "tgauge.app.err_console", Console(file=buffer, force_terminal=True, width=300)
    )
    return buffer


def test_validate_draws_progress_on_stderr_and_keeps_json_clean(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    drawn = _terminal(monkeypatch)
    argv = ["validate", str(tmp_path / "tiny.json"), "--mode", "prefill", "-s", "8", "--json"]
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)  # stdout holds the JSON alone
    assert "custom prefill b=1 s=8" in drawn.getvalue() and "0/1" in drawn.getvalue()


def test_profile_decode_advances_once_after_prefill_and_each_step(tmp_path):
    pytest.importorskip("torch")
    from estimator.spec import Workload
    from tgauge.commands.profile import run_profile
    from tgauge.targets import load_target

    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    workload = Workload(mode="decode", seq_len=8, new_tokens=5)
    target = load_target(str(tmp_path / "tiny.json"), workload, "cpu")
    ticks: list[str] = []
    result = run_profile(target, workload, "cpu", repeats=1, tick=ticks.append, task="decode")
    assert ticks == ["decode"] * 6 and len(result.cache_bytes) == 6


def test_profile_draws_progress_on_stderr(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    drawn = _terminal(monkeypatch)
    argv = ["profile", str(tmp_path / "tiny.json"), "--mode", "prefill", "-s", "8", "--json"]
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)
    assert "on cpu" in drawn.getvalue()


def test_profile_builds_a_cached_hub_id_with_transformers(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from estimator.spec import Workload
    from tgauge.targets import load_target

    _cache_model(tmp_path, "org/tiny-gpt", "abc", HF_TINY)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    target = load_target("org/tiny-gpt", Workload(mode="prefill", seq_len=8), "cpu")
    assert type(target.model).__name__ == "GPT2LMHeadModel"  # not our reference model
    assert target.model.config.n_layer == 2
