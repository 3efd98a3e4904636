"""Key tables of the issue-22 families (estimator/spec/hf_keys.py, issue 22k): every key of a
qwen2 ... olmo2 config.json is read by estimator/spec/hf_families.py, ignored with a reason or
refused by name; the real published configs (tests/estimator/spec/hf_configs/) still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from estimator.spec import ModelSpec
from estimator.spec.errors import UnsupportedError
from estimator.spec.hf_config import READERS
from estimator.spec.hf_families import READERS as FAMILY_READERS
from estimator.spec.hf_keys import ACTIVATION_KEY, FAMILY_KEYS
from estimator.spec.published import CONFIGS as PUBLISHED
from tgauge.hf_tiny_families import EVERY

HF_CONFIGS = Path(__file__).parent / "hf_configs"
FILES = sorted(p.name for p in HF_CONFIGS.glob("*.json") if p.name != "SOURCES.json")


def _file(name: str) -> dict:
    return json.loads((HF_CONFIGS / name).read_text())


def test_every_issue22_family_has_a_key_table_and_activation_key() -> None:
    assert set(READERS) <= set(FAMILY_KEYS)
    # gemma3 (the vision model) is refused whole by its reader: no FFN activation to read
    assert set(FAMILY_READERS) - {"gemma3"} <= set(ACTIVATION_KEY)


@pytest.mark.parametrize("name", FILES)
def test_published_config_files_load_with_their_keys_checked(name) -> None:
    cfg = _file(name)
    assert cfg["model_type"] in FAMILY_KEYS  # check_keys ran on every key of the file
    spec = ModelSpec.from_hf_config(cfg)
    assert spec.n_decoder_layers == cfg["num_hidden_layers"]


@pytest.mark.parametrize("name", sorted(n for n, c in PUBLISHED.items()
                                        if c["model_type"] in FAMILY_READERS))  # fmt: skip
def test_published_presets_load_with_their_keys_checked(name) -> None:
    assert ModelSpec.from_hf_config(PUBLISHED[name]).n_decoder_layers > 0


@pytest.mark.parametrize(
    "name", ["qwen2.5-7b.json", "mixtral-8x7b.json", "deepseek-v3.json", "falcon-7b.json",
             "gemma-2-9b.json", "qwen3-30b-a3b.json", "gpt-neox-20b.json", "olmo-2-7b.json"],
)  # fmt: skip
def test_made_up_key_is_refused_by_name(name) -> None:
    cfg = {**_file(name), "made_up_width": 7}
    with pytest.raises(UnsupportedError, match="made_up_width=7") as err:
        ModelSpec.from_hf_config(cfg)
    assert repr(cfg["model_type"]) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("family", sorted(EVERY))
def test_made_up_key_is_refused_on_every_tiny_config(family) -> None:
    ModelSpec.from_hf_config(EVERY[family])
    with pytest.raises(UnsupportedError, match="made_up_width=7"):
        ModelSpec.from_hf_config({**EVERY[family], "made_up_width": 7})


def test_mixtral_relabelled_as_qwen2_is_refused_naming_its_experts() -> None:
    # Mixtral-8x7B's config.json on a qwen2 model_type: MixtralSparseMoeBlock's keys are
    # refused, not read as a dense model
    cfg = {**_file("mixtral-8x7b.json"), "model_type": "qwen2"}
    with pytest.raises(UnsupportedError, match="num_local_experts=8"):
        ModelSpec.from_hf_config(cfg)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("mixtral-8x7b.json", "output_router_logits", True),
     ("mixtral-8x7b.json", "router_jitter_noise", 0.1),
     ("qwen1.5-moe-a2.7b.json", "output_router_logits", True),
     ("qwen2.5-7b.json", "use_mrope", True),
     ("deepseek-v3.json", "rope_interleave", False),
     ("deepseek-v3.json", "scoring_func", "softmax"),
     ("gpt-neox-20b.json", "hidden_dropout", 0.1),
     ("falcon-7b.json", "apply_residual_connection_post_layernorm", True),
     ("phi-3-mini.json", "attention_bias", True)],
)  # fmt: skip
def test_fixed_key_with_another_value_is_refused_by_name(name, key, value) -> None:
    with pytest.raises(UnsupportedError, match=f"{key}="):
        ModelSpec.from_hf_config({**_file(name), key: value})


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("gemma-2-9b.json", "sliding_window_pattern", 3),  # no Gemma2Config field
     ("phi-3-mini.json", "head_dim", 64),  # _phi3 takes hidden_size // heads
     ("deepseek-v3.json", "num_local_experts", 256),  # the reader reads n_routed_experts
     ("mixtral-8x7b.json", "num_experts", 8)],  # the reader reads num_local_experts
)  # fmt: skip
def test_key_the_reader_does_not_read_is_refused(name, key, value) -> None:
    with pytest.raises(UnsupportedError, match=f"{key}={value}"):
        ModelSpec.from_hf_config({**_file(name), key: value})


def test_qwen3_moe_reads_num_local_experts_as_transformers_writes_it() -> None:
    # Qwen3MoeConfig.attribute_map num_experts -> num_local_experts (to_dict's name)
    cfg = _file("qwen3-30b-a3b.json")
    renamed = {k: v for k, v in cfg.items() if k != "num_experts"}
    renamed["num_local_experts"] = cfg["num_experts"]
    assert ModelSpec.from_hf_config(renamed).n_experts == cfg["num_experts"] == 128
    with pytest.raises(UnsupportedError, match="num_local_experts=64"):
        ModelSpec.from_hf_config({**cfg, "num_local_experts": 64})


def test_gpt_neox_rotary_emb_base_is_its_rope_theta() -> None:
    # GPTNeoXConfig.convert_rope_params_to_dict: rotary_emb_base is rope_parameters' theta
    cfg = _file("gpt-neox-20b.json")
    assert ModelSpec.from_hf_config({**cfg, "rotary_emb_base": 50000}).rope_theta == 50000.0


@pytest.mark.parametrize("family", sorted(EVERY))
def test_transformers_config_keys_of_issue22_families_are_all_known(family) -> None:
    # every key transformers' config class writes (save_pretrained's to_dict) is read,
    # ignored or fixed: a config saved by transformers 5 is not refused for its defaults
    transformers = pytest.importorskip("transformers")
    saved = transformers.AutoConfig.for_model(**EVERY[family]).to_dict()
    spec = ModelSpec.from_hf_config(saved)
    assert spec == ModelSpec.from_hf_config(EVERY[family])


def test_gemma_reads_hidden_activation_not_hidden_act() -> None:
    # Gemma2MLP: ACT2FN[config.hidden_activation]; hidden_act is no Gemma2Config field
    cfg = _file("gemma-2-9b.json")
    spec = ModelSpec.from_hf_config({**cfg, "hidden_act": "relu"})
    assert (spec.activation, spec.activation_fn) == ("geglu", "gelu_pytorch_tanh")
    with pytest.raises(UnsupportedError, match="hidden_activation='mish'"):
        ModelSpec.from_hf_config({**cfg, "hidden_activation": "mish"})


def test_a_config_without_the_activation_key_has_its_class_default() -> None:
    # Qwen2Config / MixtralConfig hidden_act="silu", MixtralConfig.default_theta=1e6,
    # rms_norm_eps=1e-5: the reader takes what transformers would build
    qwen2 = ModelSpec.from_hf_config(EVERY["qwen2"])
    assert "hidden_act" not in EVERY["qwen2"]
    assert (qwen2.activation, qwen2.activation_fn) == ("swiglu", "silu")
    mixtral = ModelSpec.from_hf_config(EVERY["mixtral"])
    assert (mixtral.rope_theta, mixtral.norm_eps) == (1e6, 1e-5)
