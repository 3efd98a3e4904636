"""`tgauge fit --mode decode`: the static batch is served as transformers' generate() serves it
(issue 19): no [b, P, V] prompt logits, which generate() never computes (logits_to_keep=1)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.spec import Workload
from estimator.spec.presets import get_preset
from tgauge.cli import app

runner = CliRunner()
ARGS = ["fit", "llama-3-8b", "--gpu", "a100-80gb", "--mode", "decode"]
SIZES = ["--prompt-len", "7936", "--new-tokens", "256", "--json"]


def test_fit_static_batch_holds_no_prompt_logits_and_names_its_cap() -> None:
    out = runner.invoke(app, [*ARGS, *SIZES])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout[out.stdout.index("{") :])["plan"]
    assert plan["workload"]["engine"] == "hf-generate"
    batch = plan["max_batch"]
    b = batch["max_value"]
    # the figure was 20 with the whole prompt's logits (1.9 GiB per sequence)
    forward = runner.invoke(app, [*ARGS, "--engine", "forward", *SIZES])
    b_forward = json.loads(forward.stdout[forward.stdout.index("{") :])["plan"]["max_batch"]
    assert b_forward["max_value"] == 20 and b > b_forward["max_value"]
    # at the answer, generate()'s peak is below what the weights, the prompt's cache and the
    # prompt's logits [b, P, V] bf16 alone would make: it holds no such logits
    spec = get_preset("llama-3-8b")
    w = Workload(
        mode="decode", dtype="bf16", attention_impl="fused", batch_size=b, prompt_len=7936,
        new_tokens=256,
    )  # fmt: skip
    generate = estimate(spec, w.replace(engine="hf-generate"))
    plain = estimate(spec, w.replace(engine="forward"))
    logits = b * 7936 * spec.vocab_size * 2
    cache = plain.kv_cache.total * 7936 // (7936 + 256)
    held = generate.memory.terms["weights"] + cache
    assert held + logits <= plain.peak_memory_bytes  # the plain forward holds them
    assert generate.peak_memory_bytes < held + logits
    assert generate.peak_memory_bytes <= batch["max_fit"]["usable_bytes"]
    assert batch["next_fit"]["peak_bytes"] > batch["next_fit"]["usable_bytes"]
    assert batch["grew_most"] == "kv_cache.self"
    assert batch["next_fit"]["peak_phase"] == "prefill"


def test_fit_table_says_the_engine_and_where_the_cap_falls() -> None:
    out = runner.invoke(app, [*ARGS, "--prompt-len", "7936", "--new-tokens", "256"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "engine hf-generate" in text
    assert "kv_cache.self (peak in the prefill)" in text
