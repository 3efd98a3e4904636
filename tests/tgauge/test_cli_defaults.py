"""Preset defaults: LLM presets are sized as they are run (native dtype, fused attention),
a user's value is never overwritten, and every title states the settings used."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from estimator.spec.presets import PRESET_DEFAULTS, PRESETS, preset_workload_defaults
from tgauge.cli import app

runner = CliRunner()


def _workload(*args: str) -> dict:
    r = runner.invoke(app, ["estimate", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["workload"]


def test_every_preset_has_defaults() -> None:
    assert set(PRESET_DEFAULTS) == set(PRESETS)


@pytest.mark.parametrize(
    ("model", "dtype"), [("llama-2-7b", "fp16"), ("llama-3-8b", "bf16"), ("mistral-7b", "bf16")]
)
def test_llm_inference_defaults_to_its_checkpoint_dtype_and_fused_attention(model, dtype) -> None:
    # torch_dtype of each Hugging Face config.json (estimator/spec/presets.py names them)
    w = _workload(model, "--mode", "decode", "--prompt-len", "128")
    assert (w["dtype"], w["compute_dtype"], w["attention_impl"]) == (dtype, dtype, "fused")
    assert w["master_weights"] is False


def test_llm_training_defaults_to_bf16_with_fp32_master_weights() -> None:
    w = _workload("llama-3-8b", "-s", "256")
    assert (w["dtype"], w["master_weights"], w["attention_impl"]) == ("bf16", True, "fused")


def test_a_given_value_is_never_overwritten() -> None:
    w = _workload("llama-3-8b", "-s", "256", "--dtype", "fp32", "--attention", "eager")
    assert (w["dtype"], w["master_weights"], w["attention_impl"]) == ("fp32", False, "eager")
    w = _workload("llama-3-8b", "-s", "256", "--no-master-weights")
    assert (w["dtype"], w["master_weights"]) == ("bf16", False)
    # a given dtype keeps the Workload's own master_weights (off)
    assert _workload("llama-3-8b", "-s", "256", "--dtype", "bf16")["master_weights"] is False


def test_small_presets_and_files_keep_fp32_eager() -> None:
    w = _workload("gpt2-small", "-s", "64")
    assert (w["dtype"], w["attention_impl"]) == ("fp32", "eager")
    assert preset_workload_defaults("not-a-preset", "train", set()) == {}


def test_estimate_title_states_every_setting_and_the_defaults_used() -> None:
    r = runner.invoke(app, ["estimate", "llama-3-8b", "-s", "256"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "llama-3-8b's usual settings applied: dtype=bf16, master_weights=True" in out
    title = (
        "llama-3-8b: train, b=1, s=256, bf16 weights + fp32 master, compute bf16, "
        "attention fused, checkpointing none"
    )
    assert title in out


def test_fit_and_sweep_titles_state_the_workload() -> None:
    r = runner.invoke(app, ["fit", "mistral-7b", "--mode", "decode", "--prompt-len", "512"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "decode, b=1, prompt 512 + 1 new tokens, bf16 weights, compute bf16" in out
    assert "attention fused" in out
    r = runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64,128"])
    out = " ".join(r.stdout.split())
    assert "varying seq_len; other settings train, b=1, fp32 weights" in out  # no s=: swept
    assert "checkpointing none" in out


def test_validate_title_says_when_its_defaults_differ_from_estimates() -> None:
    from tgauge.format import validate_defaults_note

    fp32_eager = {"mode": "prefill", "dtype": "fp32", "attention_impl": "eager"}
    note = validate_defaults_note("llama-2-7b", fp32_eager)
    assert (
        note
        == " (validate's defaults; estimate and fit would use dtype=fp16, attention_impl=fused)"
    )
    assert validate_defaults_note("gpt2-small", fp32_eager) == ""
    as_usual = {"mode": "prefill", "dtype": "fp16", "attention_impl": "fused"}
    assert validate_defaults_note("llama-2-7b", as_usual) == ""
