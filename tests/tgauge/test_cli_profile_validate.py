"""`tgauge profile` and `tgauge validate` on a tiny spec file: our reference model, measured.

The oracle is the estimator (exact counts, bytes, FLOPs on CPU) and the KV-cache closed form
2 (k, v) * L * b * tokens * h_kv * d_h * 4 bytes (fp32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator import estimate
from estimator.spec import ModelSpec, Workload
from estimator.terms.params import params
from tgauge.cli import app
from tgauge.format import human_bytes

runner = CliRunner()

TINY = {
    "name": "tiny",
    "arch": "decoder",
    "d_model": 32,
    "n_heads": 4,
    "d_ff": 64,
    "n_layers": 2,
    "vocab_size": 61,
    "max_seq_len": 64,
}
B, S = 2, 16


@pytest.fixture
def spec_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _spec() -> ModelSpec:
    return ModelSpec.model_validate(TINY)


def _run(*argv: str) -> str:
    r = runner.invoke(app, list(argv))
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    return r.stdout


def _profile(spec_file: str, mode: str, *extra: str) -> str:
    return _run("profile", spec_file, "--mode", mode, "-b", str(B), "-s", str(S),
                "--repeats", "1", *extra)  # fmt: skip


def _by_pass(terms: dict[str, int], pass_: str) -> dict[str, int]:
    return {k: v for k, v in terms.items() if k.startswith(pass_ + ".")}


@pytest.mark.parametrize("mode", ["train", "prefill"])
def test_profile_json_params_and_flops_match_estimator(spec_file, mode):
    measured = json.loads(_profile(spec_file, mode, "--json"))
    est = estimate(_spec(), Workload(mode=mode, batch_size=B, seq_len=S, device="cpu"))
    assert measured["n_params"]["terms"] == params(_spec()).terms
    assert measured["weights"]["total"] == 4 * params(_spec()).total  # fp32
    flops = measured["flops"]["flops"]["terms"]
    assert _by_pass(flops, "forward") == _by_pass(est.flops.terms, "forward")
    if mode == "train":
        assert _by_pass(flops, "backward") == _by_pass(est.flops.terms, "backward")
        assert measured["gradients"]["total"] == measured["weights"]["total"]
        assert measured["saved"]["activations"]["total"] == est.memory.group("activations")
    else:
        assert "gradients" not in measured


def test_profile_json_decode_cache_matches_closed_form(spec_file):
    measured = json.loads(_profile(spec_file, "decode", "--new-tokens", "2", "--json"))
    per_token = 2 * TINY["n_layers"] * B * TINY["d_model"] * 4  # k and v, h_kv * d_h = d
    assert measured["cache_bytes"] == [per_token * (S + t) for t in range(3)]


@pytest.mark.parametrize("mode", ["train", "prefill"])
def test_profile_tables_show_exact_param_count(spec_file, mode):
    out = _profile(spec_file, mode)
    assert f"{params(_spec()).total:,}" in out
    assert "Summary" in out and "FLOPs forward" in out
    assert ("gradients" in out) == (mode == "train")


def test_profile_decode_table_shows_cache_after_prefill_and_step(spec_file):
    out = _profile(spec_file, "decode")
    per_token = 2 * TINY["n_layers"] * B * TINY["d_model"] * 4
    assert "prefill" in out and "step 1" in out
    assert human_bytes(per_token * S) in out and human_bytes(per_token * (S + 1)) in out


def test_validate_json_rows_compare_estimator_with_measurement(spec_file):
    rows = json.loads(_run("validate", spec_file, "--mode", "train", "-s", "16", "--json"))
    assert rows, "no rows"
    for row in rows:
        assert {"term", "predicted", "measured", "rel_error", "verdict"} <= row.keys()
        assert row["mode"] == "train" and row["status"] == "ok"
    by_term = {r["term"]: r for r in rows}
    n_params = params(_spec()).total
    weights = by_term["memory.weights"]
    assert weights["predicted"] == weights["measured"] == 4 * n_params
    assert weights["rel_error"] == 0 and weights["verdict"] == "exact"


def test_validate_sweep_appends_one_point_per_line_and_keeps_earlier_runs(spec_file, tmp_path):
    out = tmp_path / "runs"
    argv = ["validate", spec_file, "--mode", "prefill", "--sweep", "seq_len=8,16",
            "--out", str(out)]  # fmt: skip
    _run(*argv)
    jsonl = out / "validation.jsonl"
    first = jsonl.read_text().splitlines()
    assert [json.loads(line)["workload"]["seq_len"] for line in first] == [8, 16]
    for line in first:
        point = json.loads(line)
        assert point["model"] == "tiny" and point["status"] == "ok" and point["rows"]
    _run(*argv[:5], "seq_len=8,16,32", *argv[6:])  # a rerun resumes: only s=32 is new
    second = jsonl.read_text().splitlines()
    assert len(second) == 3 and second[:2] == first
    assert json.loads(second[2])["workload"]["seq_len"] == 32


BIG_VOCAB = {**TINY, "name": "tiny-untied", "vocab_size": 4096, "tie_embeddings": False}


@pytest.mark.parametrize("target,impl", [("cuda", "foreach"), ("cpu", "forloop")])
def test_profile_meta_steps_the_optimizer_as_the_target_device_would(tmp_path, target, impl):
    path = tmp_path / "untied.json"
    path.write_text(json.dumps(BIG_VOCAB))
    out = json.loads(_run("profile", str(path), "--device", "meta", "--target-device", target,
                          "-b", "1", "-s", "4", "--repeats", "1", "--json"))  # fmt: skip
    w = Workload(batch_size=1, seq_len=4, device=target)
    est = estimate(ModelSpec.model_validate(BIG_VOCAB), w)
    assert est.workload.optimizer_impl == impl  # torch's default on the target
    assert out["live_peak"]["peak_bytes"] == est.peak_memory_bytes
    assert out["live_peak"]["phase"] == est.peak_phase == "optimizer_step"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["profile", "--device", "meta", "--optimizer", "adafactor"], "cannot step on meta"),
        (["profile", "--device", "meta", "--target-device", "tpu"], "--target-device"),
        (["validate", "--hf"], "--impl hf needs a preset with a Hugging Face twin"),
        (["validate", "--optimizer-impl", "fused", "--optimizer", "adafactor"], "optimizer_impl"),
    ],
)
def test_optimizer_errors_are_one_line_exit_2(spec_file, argv, message):
    extra = ["-s", "4"] + (["--repeats", "1"] if argv[0] == "profile" else [])
    r = runner.invoke(app, [argv[0], spec_file, *argv[1:], *extra])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert r.output.strip().count("\n") == 0


def test_estimate_json_says_which_impl_torch_picks():
    out = json.loads(_run("estimate", "gpt2-small", "-s", "8", "--json"))
    assert out["workload"]["optimizer_impl"] == "foreach"  # device cuda: foreach
    assert out["peak_phase"] == "optimizer_step"
    fused = json.loads(_run("estimate", "gpt2-small", "-s", "8", "--optimizer-impl", "fused",
                            "--json"))  # fmt: skip
    assert fused["peak_memory_bytes"] < out["peak_memory_bytes"]
