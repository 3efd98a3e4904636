"""The HF rules of the encoder and encoder-decoder classes (estimator/rules/hf/bert.py, bart.py,
t5.py, vit.py) against the real transformers model (issue 9): BERT (masked LM and sequence
classification), T5, BART, ViT (image classification), CPU fp32, eager and sdpa, at two (b, s)
points: a small one and one where the activations dominate the training peak.

Done criteria asserted: parameters per term exact; eager FLOPs per term exact; saved
activations per term exact; training peak within 2% with the phase right; prefill / decode
peak within 2%; the KV cache exact after the prefill and after every decode step. A criterion
not met yet is an xfail(strict) naming the measured gap (docs: the report of issue 9).
"""

import pytest

from estimator.spec import ModelSpec, Workload

pytest.importorskip("transformers")
from hf_checks import assert_exact, assert_point, rows  # noqa: E402
from hf_tiny import CONFIGS  # noqa: E402

from tgauge.validate import validate_point  # noqa: E402

FAMILY_CONFIGS = {
    **{f: CONFIGS[f] for f in ("bert", "t5", "bart", "vit")},
    "bert-cls": {**CONFIGS["bert"], "architectures": ["BertForSequenceClassification"],
                 "num_labels": 3},
}  # fmt: skip
#: (b, s) per family: small, and large (activations dominate the training peak); ViT's s is
#: fixed by the image (4 x 4 patches + the class token), BERT / BART by 64 positions
POINTS = {
    "bert": [(2, 32), (8, 64)], "bert-cls": [(2, 32), (8, 64)], "bart": [(2, 32), (8, 64)],
    "t5": [(2, 32), (4, 128)], "vit": [(2, 17), (32, 17)],
}  # fmt: skip


def point(family: str, b: int, s: int, **workload):
    config = FAMILY_CONFIGS[family]
    w = Workload(batch_size=b, seq_len=s, **workload)
    return validate_point(ModelSpec.from_hf_config(config), w, hf_config=config)


def cases(mode: str, known_gaps: dict, points: dict | None = None) -> list:
    """(family, attention, b, s) for ``mode`` over ``points`` (default POINTS): the small
    eager point in the default run, the rest slow; ``known_gaps`` marks a case
    xfail(strict) with its measured gap."""
    out = []
    for family, pairs in (POINTS if points is None else points).items():
        for i, (b, s) in enumerate(pairs):
            for attention in ("eager", "fused"):
                marks = [] if (i == 0 and attention == "eager") else [pytest.mark.slow]
                gap = known_gaps.get((family, attention, i))
                if gap:
                    marks.append(pytest.mark.xfail(strict=True, reason=gap))
                out.append(pytest.param(family, attention, b, s, marks=marks,
                                        id=f"{family}-{attention}-b{b}-s{s}"))  # fmt: skip
    return out


def assert_flops(p, attention: str) -> None:
    """Eager: every FLOPs term exact; sdpa: exact or not measured (the fused kernel)."""
    flops = rows(p, "flops.")
    if attention == "eager":
        assert_exact(flops)
    assert {r.verdict for r in flops.values()} <= {"exact", "not measured"}


TRAIN_GAPS: dict = {}


@pytest.mark.parametrize(("family", "attention", "b", "s"), cases("train", TRAIN_GAPS))
def test_hf_train_terms_exact_and_peak_within_2pct(family, attention, b, s):
    p = point(family, b, s, attention_impl=attention)
    assert_point(p, "train", attention)  # params, memory terms (eager: FLOPs) exact; the peak
    assert [r.term for r in p.rows if "hf:" in r.term] == []  # every module has a term
    assert_flops(p, attention)


PREFILL_GAPS: dict = {}


@pytest.mark.parametrize(("family", "attention", "b", "s"), cases("prefill", PREFILL_GAPS))
def test_hf_prefill_params_flops_exact_and_peak_within_2pct(family, attention, b, s):
    p = point(family, b, s, attention_impl=attention, mode="prefill")
    assert_point(p, "prefill", attention)  # params exact; the peak within 2%, its phase
    assert_flops(p, attention)
    assert p.peak_phase_measured == "prefill"


DECODE_POINTS = {"t5": [(2, 32), (4, 128)], "bart": [(2, 32), (8, 60)]}
DECODE_GAPS: dict = {}


def decode_cases() -> list:
    return cases("decode", DECODE_GAPS, DECODE_POINTS)


@pytest.mark.parametrize(("family", "attention", "b", "s"), decode_cases())
def test_hf_decode_cache_exact_every_step_and_peak_within_2pct(family, attention, b, s):
    # s source tokens; the decoder starts from 4 prompt tokens and generates 3
    p = point(family, b, s, attention_impl=attention, mode="decode", prompt_len=4, new_tokens=3)
    assert_point(p, "decode", attention, new_tokens=3)  # the cache exact after all 4 steps
