"""Any nn.Module: a tiny Hugging Face GPT-2 (random init), its KV cache, and `tgauge profile`."""

import json

import pytest
import torch
from typer.testing import CliRunner

from profiler.kv import cache_nbytes
from profiler.run import HFDecoder, profile_decode, profile_forward, profile_train_step

transformers = pytest.importorskip("transformers")
L, D, H, V, FP32 = 2, 64, 4, 100, 4
CONFIG = {"model_type": "gpt2", "n_layer": L, "n_embd": D, "n_head": H, "vocab_size": V,
          "n_positions": 32, "bos_token_id": 0, "eos_token_id": 0}  # fmt: skip


def tiny_gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG))


def test_gpt2_train_step_param_count_equals_sum_of_numel():
    model = tiny_gpt2()
    ids = torch.randint(0, V, (2, 8))
    opt = torch.optim.AdamW(model.parameters())
    prof = profile_train_step(model, {"input_ids": ids, "labels": ids}, opt, repeats=1)
    assert prof.n_params.total == sum(p.numel() for p in model.parameters())
    assert "lm_head" not in prof.n_params.terms  # tied to transformer.wte: counted there
    assert prof.gradients.total == prof.weights.total
    assert prof.optimizer.terms["exp_avg"] == prof.weights.total
    assert prof.saved.activations.total > 0
    assert prof.flops.flops.group("backward") > 0
    assert prof.fvcore.flops.value is not None
    assert prof.memory().group("optimizer") == prof.optimizer.total


def test_gpt2_forward_flops_of_mlp_match_2mnk():
    model = tiny_gpt2().eval()
    b, s = 2, 8
    prof = profile_forward(model, {"input_ids": torch.randint(0, V, (b, s))}, repeats=1)
    # c_fc: [b*s, d] @ [d, 4d] per layer, summed over L layers
    assert prof.flops.flops.terms["forward.transformer.h.mlp.c_fc"] == L * 2 * b * s * D * 4 * D


def test_gpt2_kv_cache_bytes_grow_by_one_position_per_step():
    model = tiny_gpt2().eval()
    b, prompt, steps = 2, 5, 3
    dec = HFDecoder(model, torch.randint(0, V, (b, prompt)))
    prof = profile_decode(dec.step, steps, dec.cache_bytes, prefill_fn=dec.prefill)
    per_position = 2 * L * b * D * FP32  # keys and values of every layer
    assert prof.cache_bytes == [per_position * (prompt + t) for t in range(steps + 1)]


def test_cache_nbytes_reads_tuples_and_objects_with_nbytes():
    k = torch.zeros(2, 3)
    assert cache_nbytes(((k, k), (torch.zeros(4),))) == 6 * FP32 + 4 * FP32  # k counted once

    class Own:
        def nbytes(self) -> int:
            return 42

    assert cache_nbytes(Own()) == 42


def cli():
    from tgauge.cli import app  # registers every command, `profile` among them

    return app


def test_cli_profile_hf_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    args = ["profile", str(path), "-b", "1", "-s", "8", "--repeats", "1"]
    result = CliRunner().invoke(cli(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["n_params"]["total"] == sum(p.numel() for p in tiny_gpt2().parameters())
    assert payload["cuda"]["max_allocated_bytes"]["value"] is None
    tables = CliRunner().invoke(cli(), [*args, "--mode", "prefill"])
    assert tables.exit_code == 0 and "transformer.h.mlp.c_fc" in tables.stdout


def test_cli_profile_bad_path_is_one_line_exit_2():
    result = CliRunner().invoke(cli(), ["profile", "no/such/config.json"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no such file" in result.output


# A small HF Llama whose training peak is the optimizer step's (b * s = 16 tokens, V = 8000
# >> d = 256, untied): the comparison tests the optimizer, not HF's activations (issue 9).
LLAMA_CONFIG = {"model_type": "llama", "vocab_size": 8000, "hidden_size": 256,
                "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 4, "max_position_embeddings": 64,
                "tie_word_embeddings": False}  # fmt: skip
OPTIMIZERS = [
    ("adamw", "fused", "backward"),  # in place: backward's end is higher
    ("adamw", "foreach", "optimizer_step"),  # + one exp_avg_sq (_foreach_sqrt)
    ("adamw", "forloop", "optimizer_step"),  # + two [V, d] and the previous denom
    ("sgd-momentum", "foreach", "backward"),
    pytest.param("sgd-momentum", "forloop", "backward", marks=pytest.mark.slow),
    ("adafactor", "forloop", "optimizer_step"),  # + row_var @ col_var of lm_head [V, d]
    pytest.param(  # + every matrix's estimate at once
        "adafactor", "foreach", "optimizer_step", marks=pytest.mark.slow
    ),
]
IDS = ["adamw-fused", "adamw-foreach", "adamw-forloop", "sgd-momentum-foreach",
       "sgd-momentum-forloop", "adafactor-forloop", "adafactor-foreach"]  # fmt: skip


@pytest.mark.parametrize("optimizer,impl,phase", OPTIMIZERS, ids=IDS)
def test_hf_llama_train_step_matches_estimator_states_and_peak(optimizer, impl, phase):
    from estimator.spec import ModelSpec, Workload
    from tgauge.validate import validate_point

    spec = ModelSpec.from_hf_config(LLAMA_CONFIG)
    workload = Workload(batch_size=1, seq_len=16, optimizer=optimizer, optimizer_impl=impl)
    point = validate_point(spec, workload, device="cpu", hf_config=LLAMA_CONFIG)
    assert point.status == "ok", point.notes
    states = ("params.", "memory.weights", "memory.gradients", "memory.optimizer.")
    for row in point.rows:
        if row.term == "peak_memory":
            assert row.rel_error <= 0.02, row
        elif row.term.startswith(states):  # parameters, weights, gradients, optimizer states
            assert row.verdict == "exact", row
    assert any(r.term.startswith("memory.optimizer.") for r in point.rows) == (optimizer != "sgd")
    assert point.peak_phase_predicted == point.peak_phase_measured == phase
