"""ModelSpec.from_hf_config for the families of issue 22 counts the parameters of the
transformers class exactly: real published config.json files (tests/estimator/spec/hf_configs/,
their addresses in SOURCES.json), each class built on the meta device (shapes only)."""

import json
from pathlib import Path

import pytest

from estimator.spec import ModelSpec
from estimator.spec.errors import UnsupportedError
from estimator.terms.params import active_params, params

CONFIGS = Path(__file__).parent / "hf_configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.json") if p.stem != "SOURCES")


def config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def real_numel(cfg: dict) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    hf_cfg = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):  # shapes only
        model = getattr(transformers, cfg["architectures"][0])(hf_cfg)
    return sum(p.numel() for p in model.parameters())  # tied weights once


def test_every_config_names_its_source():
    assert set(json.loads((CONFIGS / "SOURCES.json").read_text())) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_params_match_the_transformers_class_on_meta(name):
    cfg = config(name)
    spec = ModelSpec.from_hf_config(cfg)
    assert spec.implementation == "hf" and spec.hf_architecture == cfg["architectures"][0]
    assert params(spec).total == real_numel(cfg)


def test_mixtral_counts_its_experts_and_the_active_two():
    spec = ModelSpec.from_hf_config(config("mixtral-8x7b"))
    # Jiang et al. 2024 (Mixtral of Experts): 47B parameters, 13B active per token
    assert params(spec).total == 46_702_792_704
    assert active_params(spec) == 12_879_925_248


def test_deepseek_v3_dense_leading_layers_and_latent_attention():
    spec = ModelSpec.from_hf_config(config("deepseek-v3"))
    assert spec.dense_layers == (0, 1, 2) and spec.n_experts == 256
    assert (spec.kv_lora_rank, spec.qk_rope_head_dim, spec.head_dim) == (512, 64, 192)
    # DeepSeek-V3 technical report: 671B total (without the 14B MTP module), 37B activated
    assert abs(params(spec).total - 671e9) / 671e9 < 0.002
    assert abs(active_params(spec) - 37e9) / 37e9 < 0.02


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("falcon-7b", {"alibi": True}, "alibi"),
        ("qwen2.5-7b", {"use_sliding_window": True}, "use_sliding_window"),
        ("qwen3-30b-a3b", {"use_sliding_window": True}, "use_sliding_window"),
        ("gemma-3-1b", {"model_type": "gemma3"}, "vision tower"),
        ("gemma-3-1b", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ("deepseek-v3", {"moe_layer_freq": 2}, "moe_layer_freq"),
    ],
)
def test_unmodelled_features_are_refused_by_name(name, change, field):
    with pytest.raises(UnsupportedError, match=field):
        ModelSpec.from_hf_config({**config(name), **change})
