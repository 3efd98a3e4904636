"""`--impl reference|hf`: a preset with a Hugging Face twin is estimated (and validated,
profiled) as that twin's transformers class; titles and JSON say which implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.spec import Workload
from estimator.spec.hf_twins import hf_twin_config, hf_twin_spec
from estimator.spec.presets import get_preset
from tgauge.cli import app

runner = CliRunner()


def _run(*argv: str) -> str:
    r = runner.invoke(app, list(argv))
    assert r.exit_code == 0, r.output
    return r.stdout


def _one_line_error(*argv: str) -> str:
    r = runner.invoke(app, list(argv))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.strip().count("\n") == 0, r.output
    return r.output


def test_estimate_impl_hf_is_the_twins_estimate_and_says_so() -> None:
    out = json.loads(_run("estimate", "llama-3-8b", "--impl", "hf", "--mode", "prefill",
                          "-s", "256", "--dtype", "bf16", "--json"))  # fmt: skip
    spec = out["spec"]
    assert (spec["implementation"], spec["hf_architecture"]) == ("hf", "LlamaForCausalLM")
    w = Workload(mode="prefill", seq_len=256, dtype="bf16", attention_impl="fused")
    assert out["peak_memory_bytes"] == estimate(hf_twin_spec("llama-3-8b"), w).peak_memory_bytes
    title = " ".join(_run("estimate", "gpt2-small", "--impl", "hf", "-s", "64").split())
    assert "implementation hf GPT2LMHeadModel" in title


def test_estimate_default_and_impl_reference_describe_the_reference_model(tmp_path: Path) -> None:
    out = json.loads(_run("estimate", "gpt2-small", "-s", "64", "--json"))
    assert out["spec"]["implementation"] == "reference"
    assert "implementation reference" in " ".join(_run("estimate", "gpt2-small").split())
    config = tmp_path / "config.json"
    config.write_text(json.dumps(hf_twin_config("gpt2-small")))
    as_hf = json.loads(_run("estimate", str(config), "-s", "64", "--json"))
    as_ref = json.loads(_run("estimate", str(config), "-s", "64", "--impl", "reference", "--json"))
    assert (as_hf["spec"]["implementation"], as_ref["spec"]["implementation"]) == (
        "hf",
        "reference",
    )


def test_fit_and_sweep_json_state_the_implementation() -> None:
    fit = json.loads(_run("fit", "mistral-7b", "--impl", "hf", "-s", "512", "--json"))
    assert fit["implementation"] == "hf MistralForCausalLM"
    sweep = json.loads(_run("sweep", "bert-base", "--vary", "seq_len=64,128", "--json"))
    assert {r["implementation"] for r in sweep} == {"reference"}
    sweep = json.loads(_run("sweep", "bert-base", "--impl", "hf", "--vary", "seq_len=64,128",
                            "--json"))  # fmt: skip
    assert {r["implementation"] for r in sweep} == {"hf BertModel"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["estimate", "transformer-base", "--impl", "hf"], "has no Hugging Face twin"),
        (["fit", "transformer-big", "--impl", "hf"], "has no Hugging Face twin"),
        (["sweep", "transformer-base", "--impl", "hf", "--vary", "seq_len=8,16"], "no Hugging"),
        (["validate", "transformer-base", "--impl", "hf", "-s", "4"], "no Hugging Face twin"),
        (["profile", "transformer-base", "--impl", "hf", "-s", "4"], "no Hugging Face twin"),
        (["estimate", "gpt2-small", "--impl", "ours"], "--impl='ours' is invalid"),
        (["validate", "gpt2-small", "--hf", "--impl", "reference"], "--hf means --impl hf"),
        (["validate", "--matrix", "--impl", "hf"], "--section picks"),
        (["validate", "gpt2-small", "--section", "hf"], "give --matrix too"),
        (["validate", "--matrix", "--section", "both"], "--section='both' is invalid"),
    ],
)
def test_impl_errors_are_one_line_exit_2(argv: list[str], message: str) -> None:
    assert message in _one_line_error(*argv)


def test_impl_hf_on_a_spec_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(get_preset("gpt2-small").model_dump_json())
    assert "--impl hf needs a preset with a Hugging Face twin" in _one_line_error(
        "estimate", str(path), "--impl", "hf"
    )


def test_validate_impl_hf_refuses_a_twin_too_big_for_this_cpu_in_one_line() -> None:
    # llama-2-7b training (bf16 + fp32 master, AdamW): about 100 GiB, more than any CI host
    out = _one_line_error("validate", "llama-2-7b", "--impl", "hf", "-s", "64")
    assert "needs about" in out and "this machine has" in out


def test_profile_impl_hf_builds_the_twin_on_meta() -> None:
    pytest.importorskip("transformers")
    out = json.loads(_run("profile", "llama-2-7b", "--impl", "hf", "--device", "meta",
                          "--mode", "prefill", "-s", "16", "--repeats", "1", "--json"))  # fmt: skip
    assert out["n_params"]["total"] == 6_738_415_616  # Llama-2-7b, as the preset counts it
    assert out["implementation"] == "hf LlamaForCausalLM"


def test_profile_json_and_title_state_the_implementation() -> None:
    out = json.loads(_run("profile", "gpt2-small", "--device", "meta", "--mode", "prefill",
                          "-s", "8", "--repeats", "1", "--json"))  # fmt: skip
    assert out["implementation"] == "reference"
    title = " ".join(_run("profile", "bert-base", "--impl", "hf", "--device", "meta",
                          "--mode", "prefill", "-s", "8", "--repeats", "1").split())  # fmt: skip
    assert "implementation hf BertModel" in title


@pytest.mark.slow
def test_validate_gpt2_small_impl_hf_runs_the_real_class() -> None:
    pytest.importorskip("transformers")
    rows = json.loads(_run("validate", "gpt2-small", "--impl", "hf", "--mode", "prefill",
                           "-b", "1", "-s", "8", "--json"))  # fmt: skip
    assert {r["implementation"] for r in rows} == {"hf"}
    params = [r for r in rows if r["term"].startswith("params.")]
    assert params and all(r["verdict"] == "exact" for r in params)
    assert all(not r["term"].startswith("params.hf:") for r in params)


@pytest.mark.parametrize(("flags", "impl"), [((), "hf"), (("--impl", "reference"), "reference")])
def test_validate_config_json_runs_its_hf_class_unless_impl_reference(
    tmp_path: Path, flags: tuple[str, ...], impl: str
) -> None:
    pytest.importorskip("transformers")
    from tgauge.hf_tiny import CONFIGS

    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["gpt2"]))
    rows = json.loads(_run("validate", str(path), "--mode", "prefill", "-s", "8", *flags,
                           "--json"))  # fmt: skip
    assert {r["implementation"] for r in rows} == {impl}
    assert all(r["verdict"] == "exact" for r in rows if r["term"].startswith("params."))
    title = " ".join(_run("validate", str(path), "--mode", "prefill", "-s", "8", *flags).split())
    assert ("Hugging Face transformers" if impl == "hf" else "reference model") in title


def test_validate_matrix_json_says_the_section_of_each_point(monkeypatch) -> None:
    pytest.importorskip("transformers")
    import tgauge.matrix as matrix

    ref = next(c for c in matrix.cases() if c.name == "gpt prefill")
    hf = next(c for c in matrix.hf_cases() if c.name == "hf bert prefill eager b=2 s=32")
    monkeypatch.setattr(matrix, "cases", lambda: [ref])
    monkeypatch.setattr(matrix, "hf_cases", lambda: [hf])
    rows = json.loads(_run("validate", "--matrix", "--json"))
    sections = {r["model"]: r["section"] for r in rows}
    assert sections == {"gpt prefill": "reference", "hf bert prefill eager b=2 s=32": "hf"}
    rows = json.loads(_run("validate", "--matrix", "--section", "hf", "--json"))
    assert {r["section"] for r in rows} == {"hf"}
    summary = " ".join(_run("validate", "--matrix").split())
    assert "section" in summary and "reference" in summary and " hf " in summary
