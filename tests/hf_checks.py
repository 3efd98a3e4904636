"""Assertions on one validated Hugging Face point (tgauge.validate.validate_point), shared by
the decoder rules' tests and the new families' (tests/tgauge/test_hf_rules_*.py)."""

from __future__ import annotations

PEAK_TOLERANCE = 0.02  # issue 9's done criterion


def rows(p, prefix: str) -> dict:
    return {r.term: r for r in p.rows if r.term.startswith(prefix)}


def assert_exact(found: dict) -> None:
    off = {k: (r.predicted, r.measured) for k, r in found.items() if r.predicted != r.measured}
    assert found and not off, off


def assert_peak(p) -> None:
    peak = rows(p, "peak_memory")["peak_memory"]
    assert abs(peak.predicted - peak.measured) <= PEAK_TOLERANCE * peak.measured, peak
    assert p.peak_phase_predicted == p.peak_phase_measured


def assert_point(p, mode: str, attention: str, new_tokens: int = 0) -> None:
    """Parameters exact; in training every memory term (and eager FLOPs) exact; in decode the
    cache after the prefill and each of ``new_tokens`` steps exact; the peak within
    PEAK_TOLERANCE with its phase."""
    assert p.status == "ok", p.notes
    assert_exact(rows(p, "params."))
    if mode == "train":
        assert_exact(rows(p, "memory.activations."))
        assert_exact({k: r for k, r in rows(p, "memory.").items() if "activations" not in k})
        if attention == "eager":
            assert_exact(rows(p, "flops."))
    if mode == "decode":
        cache = rows(p, "kv_cache.after_step.")
        assert len(cache) == new_tokens + 1
        assert_exact(cache)
    assert_peak(p)
