"""`tgauge presets`: the table and the JSON list agree with estimator.terms.params and
estimator.plan.hardware."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from estimator.plan.hardware import get_gpu
from estimator.spec import ModelSpec
from estimator.spec.presets import PRESETS
from estimator.terms.params import params
from tgauge.cli import app
from tgauge.format import human_count

WIDE = {"COLUMNS": "160"}


def test_presets_json_lists_every_preset_with_its_exact_count() -> None:
    result = CliRunner().invoke(app, ["presets", "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["models"]
    assert [r["name"] for r in rows] == list(PRESETS)
    for row in rows:
        spec = ModelSpec.model_validate(row["spec"])
        assert spec == PRESETS[row["name"]]
        assert row["arch"] == spec.arch
        assert row["n_params"] == params(spec).total


def test_presets_json_lists_every_gpu_with_its_fields() -> None:
    from estimator.plan.hardware import GPU, GPUS

    result = CliRunner().invoke(app, ["presets", "--json"], env=WIDE)
    gpus = json.loads(result.stdout)["gpus"]
    assert [g["name"] for g in gpus] == list(GPUS)
    assert next(g for g in gpus if g["name"] == "h100-sxm")["aliases"] == ["h100"]
    for row in gpus:
        aliases = row.pop("aliases")
        assert GPU.model_validate(row) == GPUS[row["name"]]
        assert all(get_gpu(alias) == GPUS[row["name"]] for alias in aliases)


def test_presets_table_shows_exact_and_short_counts() -> None:
    result = CliRunner().invoke(app, ["presets"], env=WIDE)
    assert result.exit_code == 0, result.output
    for name, spec in PRESETS.items():
        n = params(spec).total
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert f"{n:,}" in line and human_count(n) in line, line
    assert "124,439,808" in result.stdout  # GPT-2 small, as GPT2LMHeadModel counts it


def test_human_count_uses_powers_of_ten() -> None:
    assert human_count(124_439_808) == "124.44 M"
    assert human_count(6_738_415_616) == "6.74 B"
    assert human_count(86_389_248) == "86.39 M"
    assert human_count(999) == "999"
