"""finetune='freeze' on tiny Hugging Face Llama and GPT-2 (issue 20; CPU, fp32): tgauge's HF path
freezes the parameters whose glossary term matches (tgauge/peft_lora.py apply_freeze), and the
estimator's saved activations equal the measured ones, the peak within 3% in the measured
phase (the bars LoRA's HF points meet)."""

from __future__ import annotations

import pytest
from test_prof_hf import CONFIG, LLAMA_CONFIG

from estimator.spec import ModelSpec, Workload
from tgauge.validate import validate_point


@pytest.mark.parametrize(
    ("config", "frozen", "b"),
    [
        (LLAMA_CONFIG, ("decoder.layers.self_attn.*",), 1),
        pytest.param(LLAMA_CONFIG, ("embed", "decoder.layers.ffn.*", "lm_head"), 2,
                     marks=pytest.mark.slow),
        pytest.param(CONFIG, ("decoder.layers.self_attn.*",), 2, marks=pytest.mark.slow),  # GPT-2
        pytest.param(CONFIG, ("embed", "decoder.pos", "decoder.layers.ffn.*"), 1,
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_hf_freeze_matches(config, frozen, b) -> None:
    spec = ModelSpec.from_hf_config(config)
    w = Workload(mode="train", finetune="freeze", frozen=frozen, batch_size=b, seq_len=32,
                 attention_impl="eager", dropout=0.0)  # fmt: skip
    point = validate_point(spec, w, device="cpu", hf_config=config)
    assert point.status == "ok", point.notes
    rows = {r.term: r for r in point.rows}
    act = rows["memory.activations.total"]
    assert act.predicted == act.measured
    assert rows["memory.gradients"].predicted == rows["memory.gradients"].measured
    assert rows["peak_memory"].rel_error <= 0.03
    assert point.peak_phase_predicted == point.peak_phase_measured
