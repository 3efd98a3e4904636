"""Fine-tuning terms (issue 20): trainable parameters, gradients and optimizer states of the
trainable tensors only, checked against peft's get_peft_model (meta device, no memory) and
against peft's published Llama-3.2-3B count."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from estimator.estimate import estimate
from estimator.shapes import resolve
from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.spec.presets import PRESETS
from estimator.spec.workload import Workload
from estimator.terms.finetune import named_param_shapes, trainable_params
from estimator.terms.params import param_tensor_shapes
from tests.hf_tiny import CONFIGS

LLAMA_32_3B = Path(__file__).parent.parent / "data" / "llama-3.2-3b-config.json"


def _trainable(spec: ModelSpec, **fields: object) -> int:
    w = Workload(dtype="bf16", **fields)
    return sum(trainable_params(spec, resolve(spec, w)).values())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_named_shapes_match_param_tensor_shapes(name: str) -> None:
    spec = PRESETS[name]
    try:
        order = param_tensor_shapes(spec)
    except UnsupportedError as exc:  # a feature the optimizer order does not model (issue 22)
        with pytest.raises(UnsupportedError, match=re.escape(str(exc).split(" for ")[-1])):
            named_param_shapes(spec)
        return
    assert tuple(s for _, s in named_param_shapes(spec)) == order


def test_llama_32_3b_r32_qv_matches_peft_published_count() -> None:
    # peft's MetaMathQA benchmark (method_comparison/MetaMathQA, lora--llama-3.2-3B-rank32):
    # LoRA r=32 on q_proj, v_proj of meta-llama/Llama-3.2-3B trains 9,175,040 parameters
    spec = ModelSpec.from_hf_config(LLAMA_32_3B)
    assert _trainable(spec, finetune="lora", lora_rank=32, lora_targets=("q_proj", "v_proj")) == (
        9_175_040
    )
    assert _trainable(spec, finetune="lora", lora_rank=32) == 9_175_040  # peft's default q, v


def _peft_trainable(config: dict, **lora: object) -> tuple[int, set]:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model = peft.get_peft_model(model, peft.LoraConfig(**lora))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return sum(p.numel() for p in trainable), {p.dtype for p in trainable}


def test_llama_32_3b_matches_get_peft_model_on_meta() -> None:
    import json

    config = json.loads(LLAMA_32_3B.read_text())
    n, dtypes = _peft_trainable(config, r=32, target_modules=["q_proj", "v_proj"])
    assert n == 9_175_040
    assert {str(d) for d in dtypes} == {"torch.float32"}  # autocast_adapter_dtype=True


@pytest.mark.parametrize(
    ("family", "targets", "peft_targets"),
    [
        ("llama", None, None),
        ("llama", ("q", "k", "v", "o", "gate", "up", "down"), "all-linear"),
        ("gpt2", None, None),
        ("gpt2", ("c_attn", "c_proj", "c_fc"), ["c_attn", "c_proj", "c_fc"]),
    ],
)
def test_trainable_matches_get_peft_model(family: str, targets, peft_targets) -> None:
    config = CONFIGS[family]
    spec = ModelSpec.from_hf_config(config)
    fields = {"lora_rank": 4, "lora_alpha": 8}
    if targets:
        fields["lora_targets"] = targets
    lora = {"r": 4, "lora_alpha": 8}
    if peft_targets:
        lora["target_modules"] = peft_targets
    n, _ = _peft_trainable(config, **lora)
    assert _trainable(spec, finetune="lora", **fields) == n


def test_lora_grads_and_adam_states_are_fp32_adapters_only() -> None:
    spec = PRESETS["llama-3-8b"]
    w = Workload(dtype="bf16", finetune="lora", lora_rank=16, lora_targets=("q", "k", "v", "o"))
    e = estimate(spec, w)
    n = sum(trainable_params(spec, resolve(spec, w)).values())
    # per layer r * (d_in + d_out): q 4096+4096, k 4096+1024, v 4096+1024, o 4096+4096
    assert n == 32 * 16 * (8192 + 5120 + 5120 + 8192)
    m = e.memory.terms
    assert m["weights.adapters"] == m["gradients"] == 4 * n
    assert m["optimizer.exp_avg"] == m["optimizer.exp_avg_sq"] == 4 * n
    assert m["optimizer.step"] == 4 * 2 * 4 * 32  # one fp32 step per adapter tensor
    assert m["weights"] == 2 * e.params.total  # the frozen base stays bf16


def test_freeze_trains_the_unmatched_tensors_only() -> None:
    spec = PRESETS["gpt2-small"]
    w = Workload(finetune="freeze", frozen=("embed", "decoder.pos", "decoder.layers.*"))
    e = estimate(spec, w)
    trained = e.params.terms["decoder.final_norm"]  # tied lm_head: its weight is embed
    assert e.memory.terms["gradients"] == 4 * trained
    assert e.memory.terms["optimizer.exp_avg"] == 4 * trained


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"finetune": "lora", "mode": "prefill"}, "mode='train'"),
        ({"lora_rank": 8}, "finetune='lora'"),
        ({"finetune": "freeze"}, "frozen"),
        ({"finetune": "lora", "dtype": "bf16", "master_weights": True}, "fp32 already"),
    ],
)
def test_bad_finetune_fields_are_refused_by_name(fields: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):  # pydantic's ValidationError of a SpecError
        Workload(**fields)


def test_unknown_target_and_frozen_pattern_are_refused() -> None:
    spec = PRESETS["llama-3-8b"]
    with pytest.raises(SpecError, match="lora_targets entry 'qq'"):
        estimate(spec, Workload(dtype="bf16", finetune="lora", lora_targets=("qq",)))
    with pytest.raises(SpecError, match="fused"):
        gpt2 = ModelSpec.from_hf_config(CONFIGS["gpt2"])
        # dropout pinned: GPT-2's usual training dropout (0.1) is refused first otherwise
        estimate(gpt2, Workload(finetune="lora", lora_targets=("q",), dropout=0.0))
    with pytest.raises(SpecError, match="matches no parameter"):
        estimate(spec, Workload(dtype="bf16", finetune="freeze", frozen=("nope*",)))


def test_lora_states_shrink_by_the_trainable_share() -> None:
    spec = PRESETS["llama-3-8b"]
    full = estimate(spec, Workload(dtype="bf16", seq_len=64))
    lora = estimate(spec, Workload(dtype="bf16", seq_len=64, finetune="lora"))
    assert lora.memory.terms["gradients"] < full.memory.terms["gradients"] / 100
    assert lora.peak_memory_bytes < full.peak_memory_bytes


@pytest.mark.parametrize("finetune", ["lora", "qlora", "freeze"])
def test_compiled_finetune_estimates_equal_direct_ones(finetune: str) -> None:
    """The traced program of a fine-tuning structure (estimator/compiled/) gives the direct
    run's Estimate at every point, as tests/estimator/test_compiled.py checks the others."""
    from estimator.compiled.program import program
    from estimator.estimate import assemble, raw_estimate

    spec = PRESETS["llama-3-8b"]
    fields: dict = {"frozen": ("embed", "decoder.layers.*")}
    if finetune != "freeze":
        fields = {"lora_rank": 16, "lora_targets": ("q", "k", "v", "o"), "double_quant": True}
    traced = 0
    for ckpt in ("none", "full"):
        for b, s in [(1, 128), (2, 4096), (3, 1000), (1, 8192)]:
            w = Workload(dtype="bf16", attention_impl="fused", batch_size=b, seq_len=s,
                         checkpointing=ckpt, finetune=finetune, **fields)  # fmt: skip
            direct = estimate(spec, w, direct=True)
            raw = program(raw_estimate, spec, direct.workload).evaluate(direct.workload, eager=True)
            assert raw is not None
            traced += 1
            compiled = assemble(spec, direct.workload, resolve(spec, direct.workload), raw)
            assert compiled.model_dump_json() == direct.model_dump_json()
    assert traced == 8
