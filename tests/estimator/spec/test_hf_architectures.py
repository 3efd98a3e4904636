"""ModelSpec.from_hf_config records the Hugging Face class it describes (architectures) and
counts that class's parameters exactly: the seven families from tiny configs (issue 9)."""

import pytest
import torch

from estimator.estimate import estimate
from estimator.spec import ModelSpec, Workload
from estimator.terms.params import param_tensor_shapes, params

transformers = pytest.importorskip("transformers")
from hf_tiny import CONFIGS, FAMILIES  # noqa: E402

# the classes of tests/hf_tiny.py, all modelled (ViTForImageClassification: its classifier)
MODELLED = CONFIGS


def real_model(config: dict):
    transformers.logging.set_verbosity_error()
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):  # shapes only
        return getattr(transformers, config["architectures"][0])(cfg)


@pytest.mark.parametrize("family", FAMILIES)
def test_params_match_the_architectures_class_numel(family):
    config = MODELLED[family]
    spec = ModelSpec.from_hf_config(config)
    model = real_model(config)
    assert spec.implementation == "hf"
    assert spec.hf_architecture == config["architectures"][0] == type(model).__name__
    assert params(spec).total == sum(p.numel() for p in model.parameters())  # tied: once


def test_bert_masked_lm_is_the_mlm_head_not_the_pooler():
    spec = ModelSpec.from_hf_config(CONFIGS["bert"])
    base = ModelSpec.from_hf_config({**CONFIGS["bert"], "architectures": ["BertModel"]})
    d, V = spec.d_model, spec.vocab_size
    assert (spec.pooler, spec.head_transform, spec.lm_head_bias) == (False, True, True)
    assert base.hf_architecture == "BertModel" and base.pooler and not base.lm_head
    # BertOnlyMLMHead: dense d*d + d, LayerNorm 2d, bias V; minus the pooler d*d + d
    assert params(spec).total - params(base).total == 2 * d + V
    assert params(spec).total == sum(p.numel() for p in real_model(CONFIGS["bert"]).parameters())


def test_unmodelled_architecture_falls_back_to_the_family_class_it_describes():
    config = {**CONFIGS["vit"], "architectures": ["ViTForMaskedImageModeling"]}
    spec = ModelSpec.from_hf_config(config)
    assert spec.hf_architecture == "ViTModel" and spec.pooler


@pytest.mark.parametrize("family", ["vit", "bert"])
def test_classifier_params_match_the_real_class(family):
    # ViTForImageClassification: no pooler, classifier on x[:, 0]; BertForSequenceClassification:
    # BertModel with its pooler, classifier on the pooled output; num_labels outputs
    arch = {"vit": "ViTForImageClassification", "bert": "BertForSequenceClassification"}[family]
    config = {**CONFIGS[family], "architectures": [arch], "num_labels": 5}
    spec = ModelSpec.from_hf_config(config)
    assert spec.hf_architecture == arch and spec.n_labels == 5
    assert spec.pooler == (family == "bert")
    d = spec.d_model
    assert params(spec).terms["classifier"] == d * 5 + 5
    assert params(spec).total == sum(p.numel() for p in real_model(config).parameters())


def test_id2label_sets_the_number_of_labels_and_regression_is_refused():
    from estimator.spec import UnsupportedError

    labels = {str(i): f"c{i}" for i in range(7)}
    config = {**CONFIGS["vit"], "id2label": labels}
    config.pop("num_labels")
    assert ModelSpec.from_hf_config(config).n_labels == 7
    with pytest.raises(UnsupportedError, match="num_labels"):
        ModelSpec.from_hf_config({**CONFIGS["vit"], "num_labels": 1})
    with pytest.raises(UnsupportedError, match="problem_type"):
        ModelSpec.from_hf_config({**CONFIGS["vit"], "problem_type": "regression"})


def test_bert_mlm_head_flops_match_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    config = CONFIGS["bert"]
    spec = ModelSpec.from_hf_config(config)
    cfg = transformers.AutoConfig.for_model(**config, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(cfg).eval()
    b, s = 2, 16
    ids = torch.randint(0, spec.vocab_size, (b, s))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    predicted = estimate(spec, Workload(mode="prefill", batch_size=b, seq_len=s)).flops.terms
    head = {k: v for k, v in predicted.items() if "head_transform" in k or "lm_head" in k}
    n, d, V = b * s, spec.d_model, spec.vocab_size
    assert head == {"forward.head_transform.dense": 2 * n * d * d,
                    "forward.lm_head": 2 * n * d * V}  # fmt: skip
    assert sum(predicted.values()) == counter.get_total_flops()


def test_reference_model_of_the_mlm_spec_has_its_shapes():
    from reference_model import build_model

    spec = ModelSpec.from_hf_config(CONFIGS["bert"])
    model = build_model(spec, Workload(), device="meta")
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    assert shapes == param_tensor_shapes(spec)
    assert params(spec).total == sum(p.numel() for p in model.parameters())
