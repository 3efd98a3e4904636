"""Config keys and activations of the HF families (estimator/spec/hf_keys.py, issue 21): every
key is read, ignored with a reason, or refused by name; every ACT2FN entry's saved tensors come
from its definition (counted here with autograd's saved-tensor hooks) or it is refused by name.
"""

from __future__ import annotations

import copy

import pytest

from estimator.spec import ModelSpec
from estimator.spec.errors import UnsupportedError
from estimator.spec.hf_keys import ACT_SAVES, FAMILY_KEYS
from tgauge.hf_tiny import CONFIGS


def test_mixtral_relabelled_as_mistral_is_refused_naming_num_local_experts() -> None:
    # mistralai/Mixtral-8x7B-v0.1/config.json's expert keys on a mistral model_type
    cfg = {**CONFIGS["mistral"], "num_local_experts": 8, "num_experts_per_tok": 2,
           "router_aux_loss_coef": 0.02}  # fmt: skip
    with pytest.raises(UnsupportedError, match="num_local_experts=8") as err:
        ModelSpec.from_hf_config(cfg)
    assert "num_experts_per_tok=2" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("family", "key", "value"),
    [("gpt2", "reorder_and_upcast_attn", True), ("gpt2", "scale_attn_by_inverse_layer_idx", True),
     ("bert", "output_attentions", True), ("bart", "encoder_layerdrop", 0.1),
     ("llama", "use_cache", False), ("t5", "chunk_size_feed_forward", 4)],
)  # fmt: skip
def test_fixed_key_with_another_value_is_refused_by_name(family, key, value) -> None:
    with pytest.raises(UnsupportedError, match=f"{key}="):
        ModelSpec.from_hf_config({**CONFIGS[family], key: value})


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_unknown_key_is_refused_and_ignored_keys_pass(family) -> None:
    cfg = copy.deepcopy(CONFIGS[family])
    ModelSpec.from_hf_config({**cfg, "transformers_version": "5.24.0", "initializer_range": 0.02,
                              "num_beams": 4, "torch_dtype": "bfloat16"})  # fmt: skip
    with pytest.raises(UnsupportedError, match="made_up_width=7"):
        ModelSpec.from_hf_config({**cfg, "made_up_width": 7})


def test_every_reader_family_has_a_key_table() -> None:
    from estimator.spec.hf_config import READERS

    assert set(READERS) <= set(FAMILY_KEYS)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_transformers_config_keys_are_all_read_ignored_or_fixed(family) -> None:
    # every key transformers' own config class writes into config.json (save_pretrained's
    # to_dict) is in the family's table: a published config is not refused for its defaults
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.for_model(**CONFIGS[family]).to_dict()
    spec = ModelSpec.from_hf_config(cfg)
    assert spec.implementation == "hf"


@pytest.mark.parametrize("name", sorted(set(ACT_SAVES) | {"mish", "prelu", "tanh", "xielu"}))
def test_every_act2fn_entry_is_modelled_or_refused_naming_it(name) -> None:
    cfg = {**CONFIGS["gpt2"], "activation_function": name}
    try:
        spec = ModelSpec.from_hf_config(cfg)
    except UnsupportedError as exc:
        assert f"activation_function={name!r}" in str(exc)
        return
    assert spec.activation_fn == name and name in ACT_SAVES


def test_act2fn_entries_are_all_listed() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.activations import ACT2CLS

    cfg_gpt2 = CONFIGS["gpt2"]
    for name in ACT2CLS:  # modelled (saves derived) or refused by name, never a silent default
        try:
            spec = ModelSpec.from_hf_config({**cfg_gpt2, "activation_function": name})
        except UnsupportedError as exc:
            assert repr(name) in str(exc)
        else:
            assert spec.activation_fn == name in ACT_SAVES
    assert transformers


@pytest.mark.parametrize("name", sorted(ACT_SAVES))
def test_act_saves_match_autograd_saved_tensors(name) -> None:
    # oracle: the unique [n, d_ff] storages the activation's autograd nodes save on the real
    # transformers module (activations.py), x counted once
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.activations import ACT2FN

    x = torch.randn(6, 10, requires_grad=True)
    inner = x * 1.0  # a non-leaf input, as up's output is
    storages = set()

    def pack(t):
        if t.numel() == inner.numel():
            storages.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ACT2FN[name](inner)
    assert len(storages) == ACT_SAVES[name]


def test_flan_t5_gated_gelu_is_gelu_new_on_the_gate() -> None:
    # configuration_t5.T5Config: feed_forward_proj="gated-gelu" -> dense_act_fn "gelu_new"
    spec = ModelSpec.from_hf_config({**CONFIGS["t5"], "feed_forward_proj": "gated-gelu"})
    assert (spec.activation, spec.activation_fn) == ("geglu", "gelu_new")
