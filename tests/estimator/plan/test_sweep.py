"""Sweep: range parsing, and every grid point equals estimate() exactly."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys

import pytest

from estimator.estimate import estimate
from estimator.plan.grid import parse_values, parse_vary
from estimator.plan.sweep import SweepResult, sweep
from estimator.plan.sweep_points import METRICS, _one_line, metrics
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


# ---- the compiled sweep against estimate, point by point ---------------------------------
SWEEP_SEED = 7


def _random_sweeps() -> list[tuple[str, Workload, dict]]:
    """Seeded grids over sizes and structure fields, in the regimes that decide answers
    (b = 1 and large, long sequences, decode prompts and steps, target lengths, patterns)."""
    rng = random.Random(SWEEP_SEED)
    out = []
    for name in ("gpt2-small", "llama-3-8b", "mistral-7b", "t5-small", "bert-base", "vit-b-16"):
        spec = get_preset(name)
        for _ in range(3):
            modes = ["train", "prefill"] + ([] if spec.arch == "encoder" else ["decode"])
            base = Workload(mode=rng.choice(modes), attention_impl=rng.choice(["eager", "fused"]))
            vary: dict[str, list] = {"batch_size": rng.sample([1, 2, 5, 64, 512], 3)}
            if spec.is_patch_input:
                vary["dtype"] = ["fp32", "bf16"]
            else:
                vary["seq_len"] = rng.sample([1, 7, 64, 1000, 5000, 40000], 3)
            if base.mode == "decode":
                vary["new_tokens"] = rng.sample([1, 9, 300, 3000], 2)
                vary["prompt_len"] = rng.sample([1, 100, 6000], 2)
            if spec.arch == "encoder-decoder":
                vary["target_len"] = rng.sample([1, 30, 700], 2)
            if base.mode == "train" and rng.random() < 0.5:
                vary["checkpointing"] = ["none", "full"]
            if rng.random() < 0.4 and not spec.is_patch_input:
                vary["attention_pattern"] = ["causal", "sliding_window"]
                vary["window"] = [128]
            out.append((name, base, vary))
    return out


def _expected(spec, base: Workload, vary: dict, rec: dict, usable: int) -> list:
    update = {k: rec[k] for k in vary if not k.startswith("spec.")}
    try:
        return metrics(estimate(spec, _validated(base, update), direct=True), usable)
    except (SpecError, ValueError) as exc:
        return [None] * (len(METRICS) - 1) + [_one_line(exc)]


@pytest.mark.parametrize("numpy", [True, False], ids=["arrays", "points"])
@pytest.mark.parametrize(("name", "base", "vary"), _random_sweeps())
def test_compiled_sweep_rows_equal_estimate(name, base, vary, numpy, monkeypatch) -> None:
    if not numpy:  # the per-point path a lite install (no numpy) takes
        monkeypatch.setitem(sys.modules, "numpy", None)
    spec, usable = get_preset(name), 20 * 2**30
    result = sweep(spec, base, vary, usable=usable)
    for rec in result.records():
        assert [rec[m] for m in METRICS] == _expected(spec, base, vary, rec, usable), rec


def test_sweep_past_int64_is_exact() -> None:
    # sizes whose FLOPs and bytes pass 2**63: the array form is refused (int64), every point
    # still equals estimate (Python ints)
    spec, base = get_preset("llama-3-8b"), Workload(mode="train", rope_scaling=2.0**20)
    vary = {"batch_size": [1, 2**30, 2**40], "seq_len": [8, 2**20]}
    result = sweep(spec, base, vary)
    assert max(r["flops"] for r in result.records()) > 2**63
    for rec in result.records():
        assert [rec[m] for m in METRICS] == _expected(spec, base, vary, rec, None)


@pytest.mark.parametrize(
    "rows",
    [
        [[1, 'a"b', None, True, False, 0.1, float("inf"), "é\n", 2**70, -3, "x,y", "", "a\rb"]],
        [[2, "", None, None, None, 1e300, -0.0, "x", 0, 0, "ok", "q", "e"]] * 3,
        [],
    ],
)
def test_csv_and_json_writers_equal_the_standard_library(rows) -> None:
    columns = [f"c{i}" for i in range(13)]
    result = SweepResult.model_construct(
        model='m"1', base_workload=Workload(), fields=["c0"], columns=columns, rows=rows,
        usable_bytes=None,
    )  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    assert result.to_csv() == buf.getvalue()
    doc = {"model": 'm"1', "fields": ["c0"], "usable_bytes": None,
           "base_workload": Workload().model_dump(mode="json"),
           "points": list(result.records())}  # fmt: skip
    assert result.to_json() == json.dumps(doc, indent=1)
