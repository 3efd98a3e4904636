"""`--finetune lora | qlora | freeze` on estimate, fit and sweep (issue 20): the CLI builds the
Workload the library checks (tests/estimator/terms/test_finetune.py)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.spec.presets import PRESETS
from estimator.spec.workload import Workload
from tgauge.cli import app

runner = CliRunner()
LORA = [
    "--finetune",
    "lora",
    "--lora-rank",
    "16",
    "--lora-alpha",
    "32",
    "--lora-targets",
    "q,k,v,o",
]


def test_estimate_json_lora_matches_the_library() -> None:
    res = runner.invoke(app, ["estimate", "llama-3-8b", "-s", "256", *LORA, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    w = Workload(dtype="bf16", attention_impl="fused", seq_len=256, finetune="lora",
                 lora_rank=16, lora_alpha=32, lora_targets=("q", "k", "v", "o"))  # fmt: skip
    want = estimate(PRESETS["llama-3-8b"], w)
    assert doc["memory"]["terms"]["gradients"] == want.memory.terms["gradients"]
    assert doc["workload"]["master_weights"] is False  # the preset's master copy is not applied
    assert doc["peak_memory_bytes"] == want.peak_memory_bytes


def test_fit_qlora_on_a_24gb_card_answers_the_limits() -> None:
    args = ["fit", "llama-3-8b", "--gpu", "rtx-4090", "-s", "4096", "--finetune", "qlora",
            "--lora-rank", "16", "--checkpointing", "full", "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)["plan"]
    w = Workload(dtype="bf16", attention_impl="fused", seq_len=4096, finetune="qlora",
                 lora_rank=16, checkpointing="full")  # fmt: skip
    assert plan["fit"]["peak_bytes"] == estimate(PRESETS["llama-3-8b"], w).peak_memory_bytes
    assert plan["fit"]["fits"] is True
    assert plan["max_batch"]["max_value"] >= 1


def test_sweep_varies_the_lora_rank() -> None:
    args = ["sweep", "llama-3-8b", "-s", "512", "--finetune", "lora",
            "--vary", "lora_rank=8,64", "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output


def test_finetune_errors_are_one_line() -> None:
    res = runner.invoke(app, ["estimate", "llama-3-8b", "--finetune", "lora", "--lora-targets",
                              "qq"])  # fmt: skip
    assert res.exit_code == 2
    assert "lora_targets entry 'qq'" in res.output
