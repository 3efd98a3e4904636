"""`tgauge profile CONFIG.json` on the real transformers class of all seven families (issue 9):
the class `architectures` names, --attention, dropout, the model's own loss, every mode."""

import json

import pytest
import torch
from typer.testing import CliRunner

from estimator.spec import Workload

transformers = pytest.importorskip("transformers")
from hf_tiny import CONFIGS, DECODERS, FAMILIES  # noqa: E402

from profiler.run import profile_decode, profile_forward, profile_train_step  # noqa: E402
from tgauge.hf_models import DROPOUT_FIELDS  # noqa: E402
from tgauge.targets import hf_target  # noqa: E402

F = torch.nn.functional
# the profiler's runs of every family are repeated by tests/tgauge/test_validate_hf.py: here
# the families whose inputs differ most (decoder ids, pixels) run by default, the rest slow
ALL = [f if f in ("t5", "vit") else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]


def target(family: str, **workload):
    torch.manual_seed(0)
    return hf_target(CONFIGS[family], Workload(batch_size=2, seq_len=8, **workload), "cpu")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention,hf_name", [("eager", "eager"), ("fused", "sdpa")])
def test_hf_target_is_the_architectures_class_with_its_attention(family, attention, hf_name):
    model = target(family, mode="prefill", attention_impl=attention).model
    assert type(model).__name__ == CONFIGS[family]["architectures"][0]
    assert model.config._attn_implementation == hf_name


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_target_dropout_is_the_workloads(family):
    model = target(family, dropout=0.25).model
    fields = [f for f in DROPOUT_FIELDS if hasattr(model.config, f)]
    assert fields and all(getattr(model.config, f) == 0.25 for f in fields)
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(m.p == 0.25 for m in modules)  # llama / mistral: functional attention dropout


def _own_loss_oracle(family: str, logits, labels):
    """Cross-entropy written out: causal LMs predict the next token, the others each label."""
    if family in ("gpt2", "llama", "mistral"):
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_train_loss_is_the_models_own_cross_entropy(family):
    t = target(family)
    out = t.model(**t.inputs)
    expected = _own_loss_oracle(family, out.logits, t.inputs["labels"])
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family", ALL)
def test_hf_train_step_params_are_numel_and_states_follow(family):
    t = target(family)
    prof = profile_train_step(t.model, t.inputs, t.optimizer, repeats=1, fvcore=False)
    assert prof.n_params.total == sum(p.numel() for p in t.model.parameters())
    assert prof.gradients.total == prof.weights.total
    assert prof.optimizer.terms["exp_avg"] == prof.weights.total
    assert prof.saved.activations.total > 0 and prof.flops.flops.group("backward") > 0


@pytest.mark.parametrize("family", ALL)
def test_hf_prefill_flops_and_params_measured(family):
    t = target(family, mode="prefill")
    prof = profile_forward(t.model, t.inputs, repeats=1, fvcore=False)
    assert prof.n_params.total == sum(p.numel() for p in t.model.parameters())
    assert prof.flops.flops.group("forward") > 0


def _kv_per_position(cfg) -> int:
    """K and V of one position over the decoder's layers, fp32."""
    c = transformers.AutoConfig.for_model(**cfg)
    layers = getattr(c, "decoder_layers", None) or c.num_hidden_layers
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "d_kv", None) or c.hidden_size // c.num_attention_heads
    return 2 * layers * kv_heads * head_dim * 4


@pytest.mark.parametrize("family", DECODERS)
def test_hf_decode_cache_grows_one_position_per_step(family):
    b, steps = 2, 3
    t = target(family, mode="decode", prompt_len=4, new_tokens=steps)
    dec = t.decoder
    prof = profile_decode(dec.step, steps, dec.cache_bytes, prefill_fn=dec.prefill)
    per_position = b * _kv_per_position(CONFIGS[family])
    # seq2seq: the cross-attention K / V of the s = 8 source tokens, written by the prefill
    cross = 8 * per_position if family in ("t5", "bart") else 0
    # mistral's window of 8 keeps the last 8 positions once the prompt + steps pass it
    window = CONFIGS[family].get("sliding_window") or 10**9
    expected = [cross + per_position * min(4 + i, window) for i in range(steps + 1)]
    assert prof.cache_bytes == expected


def cli():
    from tgauge.cli import app

    return app


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_cli_profile_decode_of_encoder_only_is_one_line_exit_2(tmp_path, family):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS[family]))
    result = CliRunner().invoke(cli(), ["profile", str(path), "--mode", "decode"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "decode" in result.output


def test_cli_profile_t5_prefill_runs_with_decoder_inputs(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["t5"]))
    args = ["profile", str(path), "-b", "1", "-s", "8", "--mode", "prefill", "--repeats", "1"]
    result = CliRunner().invoke(cli(), [*args, "--attention", "fused", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert any(k.startswith("forward.decoder.") for k in payload["flops"]["flops"]["terms"])
