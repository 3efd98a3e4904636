"""Issue 18's "Done means", predicted against measured: every rank of a real gloo run on CPU
compared with its own estimate (``Parallel.rank``), term by term:

- per-rank parameters (local, unpadded), weights, gradients and optimizer states exact;
- saved activations exact or within 1%;
- the peak within 3% of the measured one, in the same phase;
- every collective's count and bytes exact per op type.

The measured side is tgauge/validate_parallel.py (profiler/distributed: FSDP2, DDP +
ZeroRedundancyOptimizer, DTensor TP / SP, FSDP x TP); the predicted side
``estimator.estimate(..., parallel=Parallel(..., rank=r))``. The default run takes three
cases at 2 ranks; the whole matrix (2 and 4 ranks, every layout, the tiny decoder and a
Hugging Face Llama under FSDP2) is marked slow. Layouts whose peak is not yet within the bar
are xfail(strict) with the measured reason, so that fixing them shows; the 4-rank TP layouts,
whose measured peak varies between runs, xfail(strict=False) with that reason.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from estimator.spec import ModelSpec, Workload  # noqa: E402
from estimator.spec.parallel import Parallel  # noqa: E402
from tgauge.validate_parallel import ParallelPoint, validate_parallel  # noqa: E402

DOCS = Path(__file__).parents[2] / "docs/validation"
TINY = ModelSpec.model_validate(json.loads((DOCS / "tiny-decoder.json").read_text()))
#: its untied twin: torchtitan's wrap then makes the embedding and norm + head units of their own
UNTIED = TINY.model_copy(update={"name": "tiny-decoder-untied", "tie_embeddings": False})
LLAMA = json.loads((DOCS / "hf-llama-tiny/config.json").read_text())
WORKLOAD = Workload(mode="train", batch_size=2, seq_len=32, device="cpu")

#: the Done-means bars (issue 18), by term prefix; anything else (comm.*, params, memory.weights,
#: memory.gradients, memory.optimizer.*) must be exact
ACTIVATIONS_BAR, PEAK_BAR = 0.01, 0.03

#: name -> (model, layout); "llama" is the Hugging Face LlamaForCausalLM of LLAMA
CASES: dict[str, tuple[str, dict]] = {
    "zero3-2": ("tiny", {"world": 2, "shard": "zero3"}),
    "zero2-2": ("tiny", {"world": 2, "shard": "zero2"}),
    "zero1-2": ("tiny", {"world": 2, "shard": "zero1"}),
    "tp2-2": ("tiny", {"world": 2, "tp": 2}),
    "tp2-sp-2": ("tiny", {"world": 2, "tp": 2, "sp": True}),
    "hf-llama-zero3-2": ("llama", {"world": 2, "shard": "zero3"}),
    "hf-llama-zero2-2": ("llama", {"world": 2, "shard": "zero2"}),
    "zero3-4": ("tiny", {"world": 4, "shard": "zero3"}),
    "zero2-4": ("tiny", {"world": 4, "shard": "zero2"}),
    "zero1-4": ("tiny", {"world": 4, "shard": "zero1"}),
    "zero3-tp2-4": ("tiny", {"world": 4, "tp": 2, "shard": "zero3"}),
    "zero3-tp2-sp-4": ("tiny", {"world": 4, "tp": 2, "sp": True, "shard": "zero3"}),
    "zero2-tp2-4": ("tiny", {"world": 4, "tp": 2, "shard": "zero2"}),
    "hf-llama-zero3-4": ("llama", {"world": 4, "shard": "zero3"}),
    "hf-llama-zero2-4": ("llama", {"world": 4, "shard": "zero2"}),
    # torchtitan's apply_fsdp units (Parallel.wrap; tied: embedding + norm + head one unit)
    "zero3-titan-2": ("tiny", {"world": 2, "shard": "zero3", "wrap": "torchtitan"}),
    "zero2-titan-2": ("tiny", {"world": 2, "shard": "zero2", "wrap": "torchtitan"}),
    "zero3-titan-untied-2": ("untied", {"world": 2, "shard": "zero3", "wrap": "torchtitan"}),
    "zero2-titan-untied-2": ("untied", {"world": 2, "shard": "zero2", "wrap": "torchtitan"}),
    "zero3-titan-untied-4": ("untied", {"world": 4, "shard": "zero3", "wrap": "torchtitan"}),
    "hf-llama-zero3-titan-2": ("llama", {"world": 2, "shard": "zero3", "wrap": "torchtitan"}),
    # issue 18p: zero3 with full activation checkpointing (the recompute under FSDP2)
    "zero3-ckpt-2": ("tiny", {"world": 2, "shard": "zero3"}),
    "zero3-ckpt-4": ("tiny", {"world": 4, "shard": "zero3"}),
}
#: case -> its Workload fields beside WORKLOAD's
WORKLOAD_OF: dict[str, dict] = {
    "zero3-ckpt-2": {"checkpointing": "full"},
    "zero3-ckpt-4": {"checkpointing": "full"},
}
DEFAULT = ("zero3-2", "zero1-2", "hf-llama-zero3-2", "zero3-titan-2")

#: case -> why its peak is not yet within the bar (measured, docs/validation.md): none since
#: issue 18p (the embedding output and SP's stack output held to the loss, foreach_reduce's
#: last gradient and gloo's reduce-scatter clone, the first layer's missing prefetch, and
#: the live peak measured apart from CommDebugMode)
PEAK_OPEN: dict[str, str] = {}
#: case -> why its measured peak varies from run to run (xfail, not strict: it passes in most
#: runs, exactly; docs/validation.md)
PEAK_FLAKY = dict.fromkeys(
    ("zero3-tp2-4", "zero3-tp2-sp-4", "zero2-tp2-4"),
    "4 TP ranks on a loaded CPU: in 2 of 4 runs of the zero3 x TP 2 layouts one rank's "
    "forward peak was a logits-sized buffer higher (+15,616 / +15,872 B: a functional "
    "collective's buffer held past its wait by gloo's worker thread, a race between threads, "
    "not a moment the engine's Python code decides); exact in the other runs (issue 18p)",
)


@functools.cache
def point(case: str) -> ParallelPoint:
    model, layout = CASES[case]
    workload = WORKLOAD.model_copy(update=WORKLOAD_OF.get(case, {}))
    if model == "llama":
        return validate_parallel(
            ModelSpec.from_hf_config(LLAMA), workload, Parallel(**layout), hf_config=LLAMA
        )
    return validate_parallel(UNTIED if model == "untied" else TINY, workload, Parallel(**layout))


def _cases(slow_too: bool = True) -> list:
    return [
        pytest.param(c, marks=() if c in DEFAULT else pytest.mark.slow)
        for c in CASES
        if slow_too or c in DEFAULT
    ]


def _peak_cases() -> list:
    out = []
    for c in CASES:
        marks = [] if c in DEFAULT else [pytest.mark.slow]
        if c in PEAK_OPEN:
            marks.append(pytest.mark.xfail(strict=True, reason=PEAK_OPEN[c]))
        elif c in PEAK_FLAKY:
            marks.append(pytest.mark.xfail(strict=False, reason=PEAK_FLAKY[c]))
        out.append(pytest.param(c, marks=marks))
    return out


@pytest.mark.parametrize("case", _cases())
def test_state_activations_and_collectives_meet_the_bars_on_every_rank(case: str) -> None:
    p = point(case)
    world = CASES[case][1]["world"]
    assert sorted({r.rank for r in p.rows}) == list(range(world))
    misses = []
    for r in p.rows:
        if r.term == "peak_memory":
            continue
        assert r.predicted is not None, f"rank {r.rank} {r.term}: {r.note}"
        if r.term.startswith("memory.activations"):
            ok = r.predicted == r.measured or abs(r.predicted - r.measured) <= (
                ACTIVATIONS_BAR * r.measured
            )
        else:
            ok = r.predicted == r.measured
        if not ok:
            misses.append((r.rank, r.term, r.predicted, r.measured))
    assert not misses, misses


@pytest.mark.parametrize("case", _peak_cases())
def test_peak_within_three_percent_in_its_phase_on_every_rank(case: str) -> None:
    p = point(case)
    peaks = [r for r in p.rows if r.term == "peak_memory"]
    assert len(peaks) == CASES[case][1]["world"]
    for r in peaks:
        assert abs(r.predicted - r.measured) <= PEAK_BAR * r.measured, (r.rank, r.rel_error)
        assert p.peak_phase_predicted[r.rank] == p.peak_phase_measured[r.rank], r.rank
