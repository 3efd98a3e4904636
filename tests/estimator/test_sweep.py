"""Sweep: range parsing, and every grid point equals estimate() exactly."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from estimator.estimate import estimate
from estimator.plan.sweep import METRICS, metrics, parse_values, parse_vary, sweep
from estimator.spec import SpecError, Workload
from estimator.spec.presets import get_preset


def test_ranges_doubling_linear_and_lists() -> None:
    assert parse_values("512..4096") == [512, 1024, 2048, 4096]
    assert parse_values("512..3000") == [512, 1024, 2048]
    assert parse_values("1..9:4") == [1, 5, 9]
    assert parse_values("1,2,4") == [1, 2, 4]
    assert parse_values("fp16,bf16") == ["fp16", "bf16"]


@pytest.mark.parametrize("bad", ["8..2", "0..4", "a..b", "1..4:0", "seq_len"])
def test_bad_ranges_raise_spec_error(bad: str) -> None:
    with pytest.raises(SpecError):
        parse_values(bad) if bad != "seq_len" else parse_vary(bad)


def test_unknown_field_lists_workload_fields() -> None:
    with pytest.raises(SpecError, match="seq_len"):
        parse_vary("seqlen=1,2")


def _validated(base: Workload, update: dict) -> Workload:
    return Workload.model_validate(base.model_dump(exclude_unset=True) | update)


@pytest.mark.parametrize(
    "name,base,vary",
    [
        (
            "gpt2-small",
            Workload(mode="train"),
            {"seq_len": [128, 256, 1024, 2048], "batch_size": [1, 3]},
        ),
        (
            "llama-2-7b",
            Workload(mode="decode", dtype="fp16", prompt_len=64),
            {"new_tokens": [1, 8], "dtype": ["fp16", "int8"]},
        ),
        ("t5-small", Workload(mode="train"), {"seq_len": [64, 128], "spec.d_ff": [512, 1024]}),
    ],
)
def test_every_point_equals_estimate(name, base, vary) -> None:
    spec = get_preset(name)
    result = sweep(spec, base, vary, usable=8 * 2**30)
    assert len(result.rows) == math.prod(len(v) for v in vary.values())
    for rec in result.records():
        wl_update = {k: rec[k] for k in vary if not k.startswith("spec.")}
        spec_update = {k[5:]: rec[k] for k in vary if k.startswith("spec.")}
        s = spec.model_copy(update=spec_update) if spec_update else spec
        s = type(spec).model_validate(s.model_dump(exclude_unset=True)) if spec_update else s
        try:
            expected = metrics(estimate(s, _validated(base, wl_update)), 8 * 2**30)
        except SpecError as exc:
            assert rec["error"] == str(exc).splitlines()[0]
            continue
        assert [rec[m] for m in METRICS] == expected


def test_gpt2_beyond_learned_positions_is_an_error_row() -> None:
    result = sweep(get_preset("gpt2-small"), Workload(), {"seq_len": [1024, 2048]})
    ok, bad = result.records()
    assert ok["error"] == "" and ok["peak_memory_bytes"] > 0
    assert "max_seq_len=1024" in bad["error"] and bad["peak_memory_bytes"] is None


def test_csv_and_json_parse_back_to_the_rows() -> None:
    result = sweep(get_preset("gpt2-small"), Workload(), {"batch_size": [1, 2]}, usable=2**34)
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [int(r["peak_memory_bytes"]) for r in rows] == [
        r["peak_memory_bytes"] for r in result.records()
    ]
    assert [r["fits"] for r in rows] == ["True", "True"]
    assert rows[0]["decode_with_cache_flops"] == ""
    doc = json.loads(result.to_json())
    assert doc["points"] == list(result.records())
    assert doc["fields"] == ["batch_size"]
