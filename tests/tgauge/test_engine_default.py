"""The --engine default (issue 19) read from the model's usual settings
(estimator/spec/usual.py UsualSettings.decode_engine): a config.json of a decoder-only LM
decodes as transformers' generate() serves it, an encoder-decoder, a classifier and a preset
with the plain forward; the library's Workload.engine stays "forward" unless given."""

import json

import pytest
from typer.testing import CliRunner

from estimator import estimate
from estimator.spec import ModelSpec, Workload
from estimator.spec.presets import get_preset
from tgauge.cli import app
from tgauge.hf_tiny import CONFIGS
from tgauge.options import default_engine

runner = CliRunner()
BERT_CLS = {**CONFIGS["bert"], "architectures": ["BertForSequenceClassification"]}


@pytest.mark.parametrize(
    ("config", "engine"),
    [(CONFIGS["llama"], "hf-generate"), (CONFIGS["gpt2"], "hf-generate"),
     (CONFIGS["t5"], None), (CONFIGS["bart"], None), (BERT_CLS, None)],
)  # fmt: skip
def test_usual_decode_engine_is_generate_for_decoder_only_lms(config, engine) -> None:
    assert ModelSpec.from_hf_config(config).usual.decode_engine == engine


def test_cli_engine_default_reads_the_usual_settings(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["llama"]))
    assert default_engine(str(path), "decode") == "hf-generate"
    assert default_engine(str(path), "prefill") is None  # every prefill: the plain forward
    assert get_preset("gpt2-small").usual.decode_engine is None
    assert default_engine("gpt2-small", "decode") is None
    args = ["estimate", str(path), "--mode", "decode", "-b", "2", "-s", "16", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["workload"]["engine"] == "hf-generate"
    # the library fills no engine from the usual settings
    w = Workload(mode="decode", batch_size=2, seq_len=16)
    assert estimate(ModelSpec.from_hf_config(CONFIGS["llama"]), w).workload.engine == "forward"
