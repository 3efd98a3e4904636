"""The HF rules against the real transformers classes of the issue-22 families whose memory
they model (estimator/rules/features.py MEASURED): CPU fp32, eager and sdpa, train / prefill /
decode, at seeded random (b, s) points. Oracle: tgauge.validate.validate_point on the real
model. Bars (issue 22): parameters, weights, gradients, optimizer states, saved activations
per term and the KV cache after every step exact; peaks within 2% with the phase right."""

import random
import re

import pytest

from estimator.rules.features import MEASURED_RUNS
from estimator.spec import ModelSpec, Workload
from estimator.spec.errors import UnsupportedError

pytest.importorskip("transformers")
from hf_checks import assert_point  # noqa: E402

from tgauge.hf_tiny_families import CONFIGS, FAMILIES  # noqa: E402
from tgauge.validate import validate_point  # noqa: E402

SLOW = pytest.mark.slow  # as tests/tgauge/test_hf_rules_decoders.py: training in the default run
MODES = [("train", "eager"), ("train", "fused")] + [
    pytest.param(mode, attention, marks=SLOW)
    for mode in ("prefill", "decode")
    for attention in ("eager", "fused")
]


@pytest.mark.parametrize(("mode", "attention"), MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_family_matches_real_model_at_random_points(family, mode, attention):
    rng = random.Random(f"{family}-{mode}-{attention}")  # seeded: the same points every run
    b, s = rng.randint(1, 4), rng.randint(8, 40)
    extra = {"new_tokens": rng.randint(1, 4)} if mode == "decode" else {}
    w = Workload(batch_size=b, seq_len=s, attention_impl=attention, mode=mode, **extra)
    config = CONFIGS[family]
    runs = MEASURED_RUNS.get(config["architectures"][0])
    if runs is not None and (mode not in runs[0] or attention not in runs[1]):
        from estimator.estimate import estimate

        with pytest.raises(UnsupportedError, match=config["architectures"][0]):
            estimate(ModelSpec.from_hf_config(config), w)  # not modelled: refused by name
        return
    p = validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)
    assert_point(p, mode, attention, extra.get("new_tokens", 0))


def test_unmeasured_family_memory_is_refused_by_name():
    import json
    from pathlib import Path

    from estimator.estimate import estimate

    path = Path(__file__).parents[1] / "estimator/spec/hf_configs/deepseek-v3.json"
    spec = ModelSpec.from_hf_config(json.loads(path.read_text()))
    with pytest.raises(UnsupportedError, match="DeepseekV3ForCausalLM"):
        estimate(spec, Workload(batch_size=1, seq_len=16, mode="prefill"))


@pytest.mark.parametrize(
    ("family", "change", "named"),
    [
        ("qwen3", {"dtype": "bf16"}, "q_norm / k_norm"),
        ("qwen3", {"checkpointing": "full"}, "q_norm / k_norm"),
        ("gpt_neox", {"dtype": "bf16"}, "GPTNeoXForCausalLM"),
        ("gemma2", {"checkpointing": "full"}, "Gemma2ForCausalLM"),
        ("gemma2", {"mode": "prefill", "attention_impl": "fused"}, "Gemma2ForCausalLM"),
        ("deepseek_v3", {"dtype": "bf16"}, "DeepseekV3ForCausalLM"),  # issue 22v
        # issue 22s: the no-grad passes are measured with transformers' latent DynamicCache
        # in the model dtype, from a plain call or generate()
        ("deepseek_v3", {"mode": "prefill", "kv_cache": False}, "kv_cache=False"),
        ("deepseek_v3", {"mode": "prefill", "kv_cache_dtype": "fp8"}, "kv_cache_dtype='fp8'"),
        (
            "deepseek_v3",
            {"mode": "decode", "new_tokens": 2, "engine": "vllm", "attention_impl": "fused"},
            "engine='vllm'",
        ),
    ],
)
def test_unmeasured_runs_of_the_new_rules_are_refused_by_name(family, change, named):
    """Issue 22d: the Qwen3, GPT-NeoX and Gemma 2 rules are measured in fp32 without
    checkpointing (Gemma 2: eager only); anything else is refused, never estimated."""
    from estimator.estimate import estimate

    w = Workload(**{"batch_size": 2, "seq_len": 16, "mode": "train", **change})
    with pytest.raises(UnsupportedError, match=re.escape(named)):
        estimate(ModelSpec.from_hf_config(CONFIGS[family]), w)


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"experts_impl": "eager"}, "experts_impl='eager'"),
     ({"experts_impl": "batched_mm"}, "experts_impl='batched_mm'"),
     ({"finetune": "lora"}, "finetune='lora'"),
     ({"checkpointing": "full"}, "checkpointing='full'"),
     ({"dropout": 0.1}, "dropout=0.1")],
)  # fmt: skip
def test_unmeasured_moe_runs_are_refused_by_name(fields, named):
    """Mixtral's memory is modelled for grouped_mm experts in full training without
    checkpointing or dropout (estimator/rules/hf/moe.py): the per-expert loop, batched_mm and
    the other runs are refused by name, not estimated with its rules."""
    from estimator.estimate import estimate

    spec = ModelSpec.from_hf_config(CONFIGS["mixtral"])
    w = Workload(batch_size=1, seq_len=16, mode="train", **fields)
    with pytest.raises(UnsupportedError, match=re.escape(named)):
        estimate(spec, w)


@pytest.mark.parametrize(
    ("mode", "b", "s", "fields", "changes"),
    [pytest.param("prefill", 1, 12, {}, {}, marks=SLOW),
     pytest.param("decode", 1, 20, {"new_tokens": 3}, {}, marks=SLOW),
     pytest.param("decode", 2, 13, {"new_tokens": 4, "engine": "hf-generate"}, {}, marks=SLOW),
     # the final soft-cap's [b, s, V] temporaries make the peak
     pytest.param("prefill", 2, 16, {}, {"vocab_size": 2000}, marks=SLOW),
     pytest.param("decode", 2, 12, {"new_tokens": 3, "engine": "hf-generate"},
                  {"vocab_size": 2000}, marks=SLOW),
     # the attention soft-cap's [b, h, s, s_k] temporaries make the peak
     pytest.param("prefill", 2, 40, {}, {"num_attention_heads": 8, "intermediate_size": 16},
                  marks=SLOW)],
)  # fmt: skip
def test_gemma2_no_grad_passes_at_b1_and_past_the_window(mode, b, s, fields, changes):
    """Issue 22g: Gemma 2's prefill and decode (rules/hf/gemma2.py Gemma2Pass) at b = 1, at s
    past the tiny config's sliding_window 8 (its sliding layers keep the whole prefill cat,
    DynamicSlidingWindowLayer, then w - 1 positions and the new one; the full layers all),
    under generate() (position_ids [b, s]: cos, sin [b, s, d_h]), and with widths where the
    soft-caps' temporaries make the peak."""
    config = {**CONFIGS["gemma2"], **changes}
    assert s > config["sliding_window"]
    w = Workload(batch_size=b, seq_len=s, attention_impl="eager", mode=mode, **fields)
    p = validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)
    assert_point(p, mode, "eager", fields.get("new_tokens", 0))


@pytest.mark.parametrize(
    ("mode", "attention", "b", "s", "fields", "changes"),
    [# b = 1: the values' matmul folds kv_b_proj's view without a copy
     pytest.param("prefill", "eager", 1, 40, {}, {}, marks=SLOW),
     pytest.param("prefill", "fused", 1, 37, {}, {}, marks=SLOW),
     pytest.param("decode", "fused", 1, 25, {"new_tokens": 3}, {}, marks=SLOW),
     # long-ish: s near the tiny config's 64 positions
     pytest.param("prefill", "fused", 2, 60, {}, {}, marks=SLOW),
     pytest.param("decode", "eager", 4, 50, {"new_tokens": 12}, {}, marks=SLOW),
     # a short prompt and many steps: a decode step over the grown latent cache makes the peak
     pytest.param("decode", "eager", 1, 8, {"new_tokens": 40}, {}, marks=SLOW),
     pytest.param("decode", "fused", 2, 8, {"new_tokens": 40}, {}, marks=SLOW),
     # generate(): position_ids [b, s], so cos, sin [b, s, d_rope]
     pytest.param("decode", "eager", 2, 13, {"new_tokens": 4, "engine": "hf-generate"}, {},
                  marks=SLOW),
     pytest.param("decode", "fused", 2, 6, {"new_tokens": 30, "engine": "hf-generate"}, {},
                  marks=SLOW),
     # runs of dense and MoE layers (the stack repeats a steady layer), q_proj (no q_lora_rank)
     pytest.param("prefill", "eager", 2, 24, {},
                  {"num_hidden_layers": 6, "first_k_dense_replace": 4}, marks=SLOW),
     pytest.param("decode", "fused", 2, 10, {"new_tokens": 5},
                  {"num_hidden_layers": 7, "first_k_dense_replace": 2, "q_lora_rank": None},
                  marks=SLOW)],
)  # fmt: skip
def test_deepseek_v3_no_grad_passes_match_real_model(mode, attention, b, s, fields, changes):
    """Issue 22s: DeepSeek-V3's prefill and decode (rules/hf/deepseek_v3_pass.py
    DeepseekV3Pass) against the real class: the latent cache after every step exact, the peak
    within 2% with its phase, at b = 1, where a decode step peaks, under generate(), and with
    runs of dense and MoE layers."""
    config = {**CONFIGS["deepseek_v3"], **changes}
    w = Workload(batch_size=b, seq_len=s, attention_impl=attention, mode=mode, **fields)
    p = validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)
    assert_point(p, mode, attention, fields.get("new_tokens", 0))
    if fields.get("new_tokens", 0) >= 30:
        assert p.peak_phase_measured == "decode"


BF16_MODES = [("train", "fused")] + [
    pytest.param(mode, attention, marks=SLOW)
    for mode, attention in (("train", "eager"), ("prefill", "eager"), ("decode", "fused"))
]


@pytest.mark.parametrize(("mode", "attention"), BF16_MODES)
def test_mixtral_bf16_matches_real_model_at_random_points(mode, attention):
    """The MoE block in a bf16 model (estimator/rules/hf/moe.py: the routing weights are
    fp32, so the weighted outputs and their grads are too): the same bars as in fp32."""
    rng = random.Random(f"mixtral-bf16-{mode}-{attention}")
    b, s = rng.randint(1, 4), rng.randint(8, 40)
    extra = {"new_tokens": rng.randint(1, 4)} if mode == "decode" else {}
    w = Workload(batch_size=b, seq_len=s, attention_impl=attention, mode=mode, dtype="bf16",
                 **extra)  # fmt: skip
    config = CONFIGS["mixtral"]
    p = validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)
    assert_point(p, mode, attention, extra.get("new_tokens", 0))


@pytest.mark.parametrize("attention", [pytest.param(a, marks=SLOW) for a in ("eager", "fused")])
def test_mixtral_training_peak_where_activations_dominate(attention):
    """b = 8, s = 64: the saved set outweighs the optimizer states, so the peak is the
    forward's (eager) or the MoE block's backward (sdpa), not the optimizer step."""
    w = Workload(batch_size=8, seq_len=64, attention_impl=attention, mode="train")
    config = CONFIGS["mixtral"]
    p = validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)
    assert_point(p, "train", attention)
    assert p.peak_phase_measured in ("forward", "backward")


def test_moe_estimate_states_its_routing_assumption():
    from estimator.estimate import MOE_ROUTING, estimate

    est = estimate(ModelSpec.from_hf_config(CONFIGS["mixtral"]),
                   Workload(batch_size=1, seq_len=16, mode="train"))  # fmt: skip
    assert MOE_ROUTING in est.unchecked


def test_deepseek_v3_sdpa_with_equal_head_dims_is_refused_by_name():
    """The sdpa rules describe torch's math fallback (v_head_dim != qk head dim); with equal
    head dims CPU flash runs instead: refused, not estimated."""
    from estimator.estimate import estimate

    config = {**CONFIGS["deepseek_v3"], "v_head_dim": 24}  # = qk_nope 16 + qk_rope 8
    w = Workload(batch_size=1, seq_len=16, mode="prefill", attention_impl="fused")
    with pytest.raises(UnsupportedError, match="v_head_dim"):
        estimate(ModelSpec.from_hf_config(config), w)
