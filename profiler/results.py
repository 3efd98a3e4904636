"""Typed results of the profiler; every quantity that could not be measured says why."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from estimator.breakdown import Breakdown

T = TypeVar("T")
Phase = Literal[
    "before", "forward", "forward_end", "backward", "optimizer_step", "prefill", "decode"
]


class Measured(BaseModel, Generic[T]):
    """A measured value, or ``value=None`` and a note saying why it was not measured."""

    model_config = ConfigDict(frozen=True)

    value: T | None = None
    note: str = ""

    @classmethod
    def of(cls, value: T, note: str = "") -> Measured[T]:
        return cls(value=value, note=note)

    @classmethod
    def missing(cls, reason: str) -> Measured[T]:
        return cls(value=None, note=f"not measured: {reason}")


class Timing(BaseModel):
    """Wall time of one call: median, min and max over ``repeats`` after ``warmup`` calls."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    warmup: int
    clock: Literal["cuda_events", "perf_counter"]


class LivePeak(BaseModel):
    """Peak of live tensor bytes (storages deduplicated) seen by a dispatch-mode tracker.

    ``by_category`` at the peak: ``weights``, ``buffers``, ``gradients``, ``optimizer``
    (existing before the step: the baseline) and ``allocated_in.<phase>`` for storages
    created during the step.
    """

    peak_bytes: int
    phase: Phase
    baseline_bytes: int
    by_category: dict[str, int]


class CudaMemory(BaseModel):
    """CUDA caching-allocator peaks per phase, and device memory in use by NVML."""

    max_allocated_bytes: Measured[int]
    max_reserved_bytes: Measured[int]
    peak_phase: Measured[str]
    by_phase_max_allocated: dict[str, int] = Field(default_factory=dict)
    nvml_used_bytes: Measured[int]


class FlopCount(BaseModel):
    """FLOPs from torch's FlopCounterMode, attributed to the innermost running module.

    ``flops`` terms: ``forward.<term>``, ``backward.<term>``, ``recompute.<term>``; ``by_op``
    terms: ``<phase>.<aten op>``. ``uncounted_ops``: matmul-like ops that ran but that the
    counter has no formula for (their FLOPs are missing from the totals), with call counts.
    """

    flops: Breakdown
    by_op: Breakdown
    uncounted_ops: dict[str, int]


class FvcoreCount(BaseModel):
    """fvcore's forward count (it counts MACs; converted once here: flops = 2 * macs)."""

    flops: Measured[Breakdown]
    unsupported_ops: dict[str, int] = Field(default_factory=dict)
    uncalled_modules: list[str] = Field(default_factory=list)


class SavedTensors(BaseModel):
    """Bytes of unique storages saved for backward (parameters and buffers excluded)."""

    activations: Breakdown
    recompute: Breakdown
    notes: list[str] = Field(default_factory=list)


class ForwardProfile(BaseModel):
    """A forward pass (prefill / inference)."""

    device: str
    n_params: Breakdown
    weights: Breakdown
    flops: FlopCount
    fvcore: FvcoreCount
    live_peak: LivePeak
    cuda: CudaMemory
    time: Measured[Timing]


class TrainProfile(BaseModel):
    """A training step: forward, loss, backward, optimizer step."""

    device: str
    n_params: Breakdown
    weights: Breakdown
    gradients: Breakdown
    optimizer: Breakdown
    saved: SavedTensors
    flops: FlopCount
    fvcore: FvcoreCount
    live_peak: LivePeak
    cuda: CudaMemory
    time: Measured[Timing]

    def memory(self) -> Breakdown:
        """Glossary memory terms: weights, gradients, optimizer.<state>, activations.<module>."""
        terms = {"weights": self.weights.total, "gradients": self.gradients.total}
        terms |= {f"optimizer.{k}": v for k, v in self.optimizer.terms.items()}
        terms |= {f"activations.{k}": v for k, v in self.saved.activations.terms.items()}
        return Breakdown(unit="bytes", terms=terms)


class DecodeProfile(BaseModel):
    """Decode: cache bytes after every step (index 0: after the prefill) and step times.

    ``live_peak`` (when the caller passed the model): live bytes through the prefill and the
    steps from a baseline of weights + buffers + the given inputs; phase ``prefill`` or
    ``decode``. None: not tracked."""

    device: str
    cache_bytes: list[int]
    step_time: Measured[Timing]
    live_peak: LivePeak | None = None
