"""Fuzz every file input (spec file JSON / YAML, Hugging Face config, GPU file, sweep.json,
validation.jsonl) with random bytes, random nested structures and valid files with one
field replaced by a random value: each command either works (exit 0) or prints one
``error:`` line and exits 2. Never a traceback, never another exit code."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
# examples per input in the default run; TGAUGE_FUZZ_EXAMPLES=500 for a longer hunt
N = int(os.environ.get("TGAUGE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["[/]", "[bold]x", "768", "gpt2", "Infinity", "1e400", "-1", "0"])
)
NESTED = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip
HF = {
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100,
             "n_positions": 128},
    "llama": {"model_type": "llama", "num_attention_heads": 4, "hidden_size": 64,
              "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100,
              "max_position_embeddings": 128, "rope_parameters": {"rope_theta": 10000.0}},
    "t5": {"model_type": "t5", "d_model": 64, "num_layers": 2, "num_heads": 4, "d_kv": 16,
           "d_ff": 128, "vocab_size": 100, "feed_forward_proj": "gated-gelu"},
    "vit": {"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128, "image_size": 32,
            "patch_size": 16},
    "bart": {"model_type": "bart", "d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
             "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 128,
             "decoder_ffn_dim": 128, "vocab_size": 100, "max_position_embeddings": 128},
}  # fmt: skip
GPU = {"name": "g", "total_gib": 16, "peak_tflops": {"fp32": 10, "bf16": 100}, "bandwidth_tb_s": 1}
SWEEP = {"model": "m", "fields": ["seq_len"], "usable_bytes": None, "base_workload": {},
         "points": [{"seq_len": 64, "peak_memory_bytes": 1000, "flops": 10, "fits": None,
                     "error": ""}]}  # fmt: skip
RECORD = {"model": "m", "device": "cpu", "workload": {"mode": "train", "batch_size": 1,
          "seq_len": 8}, "status": "ok", "rows": [{"term": "params.total", "unit": "params",
          "predicted": 10, "measured": 10, "verdict": "exact"}]}  # fmt: skip


def _mutated(base: dict, key: str, value: object, drop: bool) -> dict:
    out = dict(base)
    if drop:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def _check(argv_for: object, name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        r = runner.invoke(app, argv_for(path, Path(folder)))  # type: ignore[operator]
    assert r.exit_code in (0, 2), (r.exit_code, r.output, r.exception, content[:300])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    if r.exit_code == 2:  # notes (a skipped partial line, ...) may come before the error
        lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("note: ")]
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


def _estimate(path: Path, _: Path) -> list[str]:
    return ["estimate", str(path), "-s", "8", "--json"]


def _fit(path: Path, _: Path) -> list[str]:
    return ["fit", "gpt2-small", "-s", "64", "--gpu", str(path), "--json"]


def _report_sweep(path: Path, folder: Path) -> list[str]:
    return ["report", "--out", str(folder / "r"), "--sweep", str(path), "--json"]


def _report_validation(path: Path, folder: Path) -> list[str]:
    return ["report", "--out", str(folder / "r"), "--validation", str(path), "--json"]


def _dump(value: object) -> bytes:
    return json.dumps(value).encode()


@FUZZ
@given(data=st.binary(max_size=200) | NESTED.map(_dump))
def test_spec_json_fuzz(data):
    _check(_estimate, "spec.json", data)


@FUZZ
@given(value=NESTED, key=st.sampled_from([*TINY, "name", "n_decoder_layers", "position"]),
       drop=st.booleans())  # fmt: skip
def test_spec_field_fuzz(value, key, drop):
    _check(_estimate, "spec.json", _dump(_mutated(TINY, key, value, drop)))


@FUZZ
@given(data=st.binary(max_size=200) | NESTED.map(lambda v: yaml.safe_dump(v).encode()))
def test_spec_yaml_fuzz(data):
    _check(_estimate, "spec.yaml", data)


@FUZZ
@given(family=st.sampled_from(sorted(HF)), value=NESTED, pick=st.integers(0, 20),
       drop=st.booleans())  # fmt: skip
def test_hf_config_fuzz(family, value, pick, drop):
    base = HF[family]
    key = [*base, "layer_norm_epsilon", "hidden_act", "tie_word_embeddings"][pick % (len(base) + 3)]
    _check(_estimate, "config.json", _dump(_mutated(base, key, value, drop)))


@FUZZ
@given(data=st.binary(max_size=200) | NESTED.map(_dump), value=NESTED,
       key=st.sampled_from([*GPU, "total_bytes", "peak_flops_per_s", "bandwidth_bytes_per_s"]),
       mutate=st.booleans())  # fmt: skip
def test_gpu_file_fuzz(data, value, key, mutate):
    _check(_fit, "gpu.json", _dump(_mutated(GPU, key, value, False)) if mutate else data)


@FUZZ
@given(data=st.binary(max_size=200) | NESTED.map(_dump), value=NESTED,
       key=st.sampled_from(["model", "fields", "points", "seq_len", "peak_memory_bytes",
                            "flops", "fits", "error"]), mutate=st.booleans())  # fmt: skip
def test_sweep_json_fuzz(data, value, key, mutate):
    doc = json.loads(json.dumps(SWEEP))
    if key in doc:
        doc[key] = value
    else:
        doc["points"][0][key] = value
    _check(_report_sweep, "sweep.json", _dump(doc) if mutate else data)


@settings(max_examples=max(1, N // 3), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200) | NESTED.map(_dump), value=NESTED,
       key=st.sampled_from([*RECORD, "predicted_fits"]), mutate=st.booleans())  # fmt: skip
def test_validation_jsonl_fuzz(data, value, key, mutate):
    line = _dump(_mutated(RECORD, key, value, False)) + b"\n" if mutate else data
    _check(_report_validation, "validation.jsonl", line)
