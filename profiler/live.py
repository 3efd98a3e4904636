"""Live tensor memory through a step: a dispatch-mode tracker (any device) and CUDA stats.

Imports torch at import: import this module only from inside the functions that need it.

The tracker sees every tensor returned by an aten op, keeps a weak reference to its untyped
storage and counts the storage's bytes until the storage is freed (the weakref callback). It
sees what PyTorch hands out, not the allocator: kernel-internal scratch and allocator rounding
or caching are invisible to it (on CUDA, ``CudaMemory`` reports the allocator's view).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from profiler.params import storage_key
from profiler.results import CudaMemory, LivePeak, Measured
from profiler.tracking import flatten_tensors


class LiveMemoryTracker(TorchDispatchMode):
    """Counts live storage bytes; records the peak, its phase and the categories at the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "before"
        self._live: dict[int, tuple[int, str, weakref.ref]] = {}
        self.by_category: dict[str, int] = {}
        self.current = 0
        self.baseline = 0
        self.peak = LivePeak(peak_bytes=0, phase="before", baseline_bytes=0, by_category={})

    def track_existing(self, tensors: Any, category: str) -> None:
        """Count tensors that exist before the step (weights, gradients, optimizer, inputs)."""
        for t in flatten_tensors(tensors):
            self._add(t, category)
        self.baseline = self.current
        self._maybe_peak()

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def _add(self, tensor: Any, category: str) -> None:
        storage = tensor.untyped_storage()
        key = storage_key(tensor)
        nbytes = storage.nbytes()
        old = self._live.get(key)
        if old is not None and old[2]() is not None:
            if old[0] == nbytes:
                return
            self._change(old[1], nbytes - old[0])  # resized in place
            self._live[key] = (nbytes, old[1], old[2])
            return
        ref = weakref.ref(storage, lambda _ref, key=key: self._free(key, _ref))
        self._live[key] = (nbytes, category, ref)
        self._change(category, nbytes)

    def _free(self, key: int, ref: weakref.ref) -> None:
        entry = self._live.get(key)
        if entry is not None and entry[2] is ref:
            del self._live[key]
            self._change(entry[1], -entry[0])

    def _change(self, category: str, delta: int) -> None:
        self.current += delta
        self.by_category[category] = self.by_category.get(category, 0) + delta

    def _maybe_peak(self) -> None:
        if self.current > self.peak.peak_bytes:
            self.peak = LivePeak(
                peak_bytes=self.current,
                phase=self.phase,  # type: ignore[arg-type]
                baseline_bytes=self.baseline,
                by_category={k: v for k, v in self.by_category.items() if v},
            )

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in flatten_tensors(out):
            self._add(t, f"allocated_in.{self.phase}")
        self._maybe_peak()
        return out


class CudaPhaseMemory:
    """Allocator peak per phase (reset between phases) and NVML device memory in use."""

    def __init__(self, device: Any) -> None:
        self.device = torch.device(device)
        self.enabled = self.device.type == "cuda" and torch.cuda.is_available()
        self.phase: str | None = None
        self.max_allocated: dict[str, int] = {}
        self.max_reserved = 0
        if self.enabled:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def set_phase(self, phase: str) -> None:
        if not self.enabled:
            return
        torch.cuda.synchronize(self.device)
        if self.phase is not None:
            self.max_allocated[self.phase] = torch.cuda.max_memory_allocated(self.device)
            self.max_reserved = max(self.max_reserved, torch.cuda.max_memory_reserved(self.device))
        torch.cuda.reset_peak_memory_stats(self.device)
        self.phase = phase

    def result(self) -> CudaMemory:
        if not self.enabled:
            reason = (
                f"device is {self.device.type}, not cuda"
                if self.device.type != "cuda"
                else "CUDA is not available"
            )
            return CudaMemory(
                max_allocated_bytes=Measured.missing(reason),
                max_reserved_bytes=Measured.missing(reason),
                peak_phase=Measured.missing(reason),
                nvml_used_bytes=Measured.missing(reason),
            )
        self.set_phase("done")
        peak_phase = max(self.max_allocated, key=self.max_allocated.__getitem__)
        return CudaMemory(
            max_allocated_bytes=Measured.of(self.max_allocated[peak_phase]),
            max_reserved_bytes=Measured.of(self.max_reserved),
            peak_phase=Measured.of(peak_phase),
            by_phase_max_allocated=self.max_allocated,
            nvml_used_bytes=nvml_used_bytes(self.device.index or torch.cuda.current_device()),
        )


def nvml_used_bytes(index: int) -> Measured[int]:
    """Device memory in use by NVML (all processes, CUDA context included)."""
    try:
        import pynvml
    except ImportError:
        return Measured.missing("pynvml (nvidia-ml-py) is not installed")
    try:
        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            return Measured.of(int(info.used), "NVML: whole device, CUDA context included")
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        return Measured.missing(f"NVML: {exc}")
