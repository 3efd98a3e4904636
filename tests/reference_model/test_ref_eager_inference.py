"""Eager attention's inference peak (estimator/rules/reference/passes.py, Pass.attend) against
the measurement (tgauge.validate.validate_point): torch.matmul copies q, k^T and v only when
[b, h, t, d_h] cannot fold into [b * h, t, d_h] as a view. Grouped keys/values (n_kv_heads <
n_heads) are repeat_kv's contiguous copies and a cached past is torch.cat's contiguous result:
no copy of k^T or v; with b = 1 nothing is copied (issue 22q: the replay counted those copies,
1,984 B over the measured peak of the matrix's MoE prefill at b = 2, s = 8)."""

from __future__ import annotations

import random

import pytest
from ref_specs import DECODERS, GPT, LLAMA, spec

from estimator.spec import Workload
from tgauge.validate import validate_point


def _exact(model_spec, wl: Workload) -> None:
    point = validate_point(model_spec, wl, device="cpu")
    assert point.status == "ok", point.notes
    (row,) = [r for r in point.rows if r.term == "peak_memory"]
    assert row.measured is not None
    assert row.predicted == row.measured, (wl, row.predicted - row.measured)
    assert point.peak_phase_predicted == point.peak_phase_measured


FIXED = [  # (spec fields, mode, b, s): where the attention is the peak
    ({**LLAMA, "n_kv_heads": 2}, "prefill", 1, 8),  # was 192 B over
    ({**LLAMA, "n_kv_heads": 2}, "decode", 2, 13),  # was 1,079 B over
    ({**LLAMA, "n_kv_heads": 1, "n_heads": 4}, "prefill", 3, 6),  # MQA
    (GPT, "prefill", 1, 12),  # b = 1: q, k^T, v fold as views
    (GPT, "prefill", 2, 12),  # b > 1: all three copied
]


@pytest.mark.parametrize("fields,mode,b,s", FIXED)
def test_eager_prefill_peak_is_exact(fields, mode, b, s) -> None:
    kw = {"new_tokens": 2} if mode == "decode" else {}
    wl = Workload(mode=mode, batch_size=b, seq_len=s, attention_impl="eager", **kw)
    _exact(spec(**fields), wl)


@pytest.mark.parametrize("fields", [GPT, {**LLAMA, "n_kv_heads": 2}], ids=["mha", "gqa"])
def test_eager_decode_step_peak_is_exact(fields) -> None:
    """A one-token prompt and many steps: the last step (keys and values of the cache's
    torch.cat, never copied by matmul) is the peak."""
    wl = Workload(
        mode="decode", batch_size=2, seq_len=2, prompt_len=1, new_tokens=24, attention_impl="eager"
    )
    point = validate_point(spec(**fields), wl, device="cpu")
    assert point.peak_phase_measured == "decode"
    _exact(spec(**fields), wl)


def _draw(rng: random.Random) -> tuple[dict, Workload]:
    """A seeded grouped-query point: heads, kv heads, decoder family, mode, b, s, impl."""
    h = rng.choice([2, 4, 8])
    h_kv = rng.choice([d for d in (1, 2, 4) if d < h and h % d == 0])
    name = rng.choice(["llama_gqa", "mistral_window", "vaswani_gqa", "mqa_sinusoidal_geglu"])
    fields = {**DECODERS[name], "n_heads": h, "n_kv_heads": h_kv}
    mode = rng.choice(["prefill", "decode"])
    kw = (
        {"prompt_len": rng.randint(2, 9), "new_tokens": rng.randint(1, 4)}
        if mode == "decode"
        else {}
    )
    b, s = rng.choice([1, 2, 3]), rng.choice([4, 7, 8, 13])
    impl = rng.choice(["eager", "eager", "fused"])
    return fields, Workload(mode=mode, batch_size=b, seq_len=s, attention_impl=impl, **kw)


@pytest.mark.parametrize(
    "seed", [pytest.param(i, marks=[] if i < 2 else [pytest.mark.slow]) for i in range(12)]
)
def test_grouped_query_random_points_are_exact(seed) -> None:
    fields, wl = _draw(random.Random(2200 + seed))
    _exact(spec(**fields), wl)
