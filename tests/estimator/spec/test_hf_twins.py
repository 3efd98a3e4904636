"""Each preset's Hugging Face twin (estimator/spec/hf_twins.py) is the preset read as a config.json:
the same spec field by field but ``implementation="hf"``, and the transformers class that
``architectures`` names, built from the dict on the meta device, has the preset's parameters."""

from __future__ import annotations

from typing import Any

import pytest

from estimator.spec import SpecError
from estimator.spec.hf_twins import HF_TWINS, hf_twin_config, hf_twin_spec
from estimator.spec.presets import PRESETS, get_preset
from estimator.terms.params import params

# what tells the twin from the preset: the implementation, and how HF's code computes the
# same sizes (GPT-2's written-out gelu_new, its fused c_attn)
WHICH = {"implementation", "hf_architecture", "activation_fn", "fused_qkv", "fused_gate_up"}


def test_every_preset_but_vaswanis_has_a_twin() -> None:
    papers = {"gpt-3-175b", "gopher-280b", "chinchilla-70b"}  # issue 22: no config.json
    assert set(PRESETS) - set(HF_TWINS) == {"transformer-base", "transformer-big", *papers}


@pytest.mark.parametrize("name", sorted(HF_TWINS))
def test_twin_spec_equals_preset_but_for_its_implementation(name: str) -> None:
    spec = hf_twin_spec(name)
    assert spec.model_dump(exclude=WHICH) == get_preset(name).model_dump(exclude=WHICH)
    assert (spec.implementation, spec.hf_architecture) == ("hf", HF_TWINS[name]["architectures"][0])


@pytest.mark.parametrize("name", sorted(HF_TWINS))
def test_twin_config_builds_a_transformers_class_with_the_presets_params(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = hf_twin_config(name)
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = getattr(transformers, cfg["architectures"][0])(config)
    n_unique = sum(p.numel() for p in model.parameters())  # parameters() skips tied repeats
    assert n_unique == params(get_preset(name)).total


def test_twin_lookup_is_case_insensitive_and_returns_a_copy() -> None:
    cfg: Any = hf_twin_config("GPT2-Small")
    cfg["n_layer"] = 1
    assert HF_TWINS["gpt2-small"]["n_layer"] == 12
    assert hf_twin_spec("GPT2-Small").name == "gpt2-small"


def test_preset_without_twin_names_the_presets_with_one() -> None:
    with pytest.raises(SpecError, match="transformer-base.*no Hugging Face twin.*gpt2-small"):
        hf_twin_config("transformer-base")
    with pytest.raises(SpecError, match="preset='gpt5' is unknown"):
        hf_twin_config("gpt5")
