"""One source of defaults (issue 23): the library fills a Workload's unset fields from the
model's usual settings (a preset's, or a config.json's as transformers runs it), the Estimate
names them, and the CLI passes only what the user gave, so both print the same peak."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estimator import estimate
from estimator.spec import ModelSpec, UnsupportedError, Workload
from estimator.spec.presets import get_preset
from tgauge.cli import app

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"

# meta-llama/Meta-Llama-3-70B config.json (the fields tgauge reads)
LLAMA_70B = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
    "intermediate_size": 28672, "num_attention_heads": 64, "num_hidden_layers": 80,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "hidden_act": "silu", "torch_dtype": "bfloat16",
}  # fmt: skip
# openai-community/gpt2 config.json: resid_pdrop, embd_pdrop, attn_pdrop 0.1
GPT2 = {
    "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 12, "n_embd": 768,
    "n_head": 12, "vocab_size": 50257, "n_positions": 1024, "activation_function": "gelu_new",
    "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
}  # fmt: skip


def _cli_estimate(*args: str) -> dict:
    r = runner.invoke(app, ["estimate", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_readme_library_example_prints_the_cli_peak() -> None:
    code = re.search(r"## Library\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(code, scope)  # the README's own snippet, as a reader runs it
    cli = _cli_estimate(
        "llama-3-8b", "-b", "4", "-s", "4096", "--dtype", "bf16", "--master-weights"
    )
    assert scope["est"].peak_memory_bytes == cli["peak_memory_bytes"]
    assert scope["est"].defaults_applied == cli["defaults_applied"] == {"attention_impl": "fused"}


def test_estimate_names_the_usual_settings_it_filled_and_never_replaces_a_given_value() -> None:
    spec = get_preset("gpt2-small")
    filled = estimate(spec, Workload(batch_size=8, seq_len=1024))
    assert filled.defaults_applied == {"dropout": 0.1}
    assert filled.workload.dropout == 0.1
    given = estimate(spec, Workload(batch_size=8, seq_len=1024, dropout=0.0))
    assert given.defaults_applied == {} and given.workload.dropout == 0.0
    # GPT-2 small trains with dropout: leaving it out was 24% low (issue 23)
    assert filled.peak_memory_bytes > 1.2 * given.peak_memory_bytes


def test_bf16_config_is_sized_in_bf16_with_its_default_attention() -> None:
    spec = ModelSpec.from_hf_config(LLAMA_70B)
    w = Workload(mode="decode", prompt_len=4096, batch_size=4)
    est = estimate(spec, w)
    assert est.defaults_applied == {"dtype": "bf16", "attention_impl": "fused"}
    assert est.workload.kv_cache_dtype == "bf16"
    explicit = w.replace(dtype="bf16", attention_impl="fused")
    assert est.peak_memory_bytes == estimate(spec, explicit).peak_memory_bytes
    # 140.58 GiB, not the 308.09 GiB of fp32 weights with eager attention (issue 23)
    assert round(est.peak_memory_bytes / 2**30, 2) == 140.58


def test_config_trains_with_its_dropout() -> None:
    spec = ModelSpec.from_hf_config(GPT2)
    est = estimate(spec, Workload(batch_size=8, seq_len=1024))
    assert est.defaults_applied == {"dropout": 0.1, "attention_impl": "fused"}
    assert "resid_pdrop 0.1" in spec.usual.source


def test_config_whose_dropout_sites_differ_keeps_zero_and_says_so() -> None:
    cfg = dict(GPT2, attn_pdrop=0.0)
    usual = ModelSpec.from_hf_config(cfg).usual
    assert usual.dropout == 0.0 and "sites differ" in usual.source


def test_an_unmodelled_usual_setting_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedError, match="usual settings applied: dropout=0.1"):
        estimate(get_preset("gpt2-small"), Workload(seq_len=64, autocast="bf16"))


def test_cli_announces_a_config_defaults_with_their_source(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_70B))
    # the engine pinned: the figure is the plain forward (a config.json decodes as
    # generate() by default, which keeps only the last position's logits: issue 19)
    args = ["estimate", str(path), "--mode", "decode", "--prompt-len", "4096", "-b", "4",
            "--engine", "forward"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "usual settings applied: dtype=bf16, attention_impl=fused" in text
    assert "torch_dtype bfloat16" in text
    assert "140.58 GiB" in text
