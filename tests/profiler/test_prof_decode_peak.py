"""profile_decode's live tracking: peak bytes and phase from a baseline of weights + buffers +
inputs, checked against bytes counted by hand on toy prefill / step functions."""

from __future__ import annotations

import torch
from torch import nn

from profiler.run import profile_decode

F32 = 4


class Toy(nn.Module):
    """8 x 4 weight, 4 bias (fp32: 144 bytes) and a [10] fp32 buffer (40 bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)
        self.register_buffer("table", torch.zeros(10))


def _decoder(prefill_numel: int, step_numel: int):
    """A cache that prefill fills with [prefill_numel] and each step grows by cat of
    [step_numel] (old cache freed after the cat)."""
    cache: list[torch.Tensor] = []

    def prefill() -> None:
        cache[:] = [torch.ones(prefill_numel)]

    def step(_: int) -> None:
        cache[:] = [torch.cat([cache[0], torch.ones(step_numel)])]

    return prefill, step, cache


def test_decode_peak_is_the_last_step_cat_by_hand():
    model, prompt = Toy(), torch.zeros(2, 3, dtype=torch.long)  # 48 bytes of ids
    prefill, step, cache = _decoder(prefill_numel=100, step_numel=50)
    prof = profile_decode(
        step, 3, lambda: cache[0].nbytes, prefill_fn=prefill, model=model, inputs=[prompt]
    )
    base = 144 + 40 + 48
    # last step: old cache [200] + new [50] + cat [250] live at the cat
    assert prof.live_peak.baseline_bytes == base
    assert prof.live_peak.peak_bytes == base + (200 + 50 + 250) * F32
    assert prof.live_peak.phase == "decode"
    assert prof.cache_bytes == [400, 600, 800, 1000]  # the measured pass runs as before


def test_decode_peak_counts_the_old_cache_beside_its_cat_by_hand():
    model = Toy()
    prefill, step, cache = _decoder(prefill_numel=1000, step_numel=1)
    prof = profile_decode(step, 2, lambda: cache[0].nbytes, prefill_fn=prefill, model=model)
    # the prefill's [1000] is below the last step: old [1001] + new [1] + cat [1002]
    assert prof.live_peak.peak_bytes == 184 + (1001 + 1 + 1002) * F32
    assert prof.live_peak.phase == "decode"


def test_prefill_phase_when_its_transient_is_largest_by_hand():
    model, cache = Toy(), []

    def prefill() -> None:
        scratch = torch.ones(5000)  # a prefill transient of 20,000 bytes
        cache[:] = [scratch[:10].clone()]

    def step(_: int) -> None:
        cache[:] = [torch.cat([cache[0], torch.ones(1)])]

    prof = profile_decode(step, 2, lambda: cache[0].nbytes, prefill_fn=prefill, model=model)
    assert prof.live_peak.peak_bytes == 184 + (5000 + 10) * F32  # scratch + its clone
    assert prof.live_peak.phase == "prefill"


def test_decode_without_model_has_no_live_peak():
    prefill, step, cache = _decoder(4, 1)
    prof = profile_decode(step, 1, lambda: cache[0].nbytes, prefill_fn=prefill)
    assert prof.live_peak is None
