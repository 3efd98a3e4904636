"""What one rank holds: its parameters, gradients and optimizer states as local shards, the
activations it saves, and the live peak of its step.

Imports torch at import: import this module only from inside the functions that need it.

A DTensor (FSDP2's sharded parameters, TP's column / row shards, their gradients and the
optimizer states built from them) counts as its local tensor (``DTensor.to_local()``), by the
storage it keeps alive: FSDP2 allocates each sharded parameter padded to
``ceil(dim0 / dp)`` rows (``FSDPParam._init_sharded_param``), so its storage is the padded
shard; its gradient is a view of the reduce-scatter output of the whole group
(``foreach_reduce``), the storage of all the group's padded shards; the optimizer states
``zeros_like`` the local (unpadded) shard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.distributed._functional_collectives import AsyncCollectiveTensor
from torch.distributed.tensor import DTensor

from estimator.breakdown import Breakdown
from profiler.live import LiveMemoryTracker
from profiler.params import _owned, _storage_bytes, storage_key
from profiler.saved import SavedTensorRecorder
from profiler.saved import measure_saved as _measure_saved
from profiler.tracking import ModulePathTracker, flatten_tensors


def local(tensor: Any) -> Any:
    """The rank's own tensor behind a DTensor, the result behind an AsyncCollectiveTensor;
    any other tensor as it is. An AsyncCollectiveTensor (what functional collectives return,
    torch/distributed/_functional_collectives.py: ``_wrap_tensor_autograd``) is a wrapper
    subclass (``_make_wrapper_subclass``): its own storage holds no data ("Attempted to
    access the data pointer on an invalid python storage") but reports the collective's
    nbytes, so counted as itself it doubled every gathered tensor (issue 18i: the TP logits'
    all-gather, 15,872 bytes of the tiny decoder at tp 2)."""
    if isinstance(tensor, DTensor):
        return tensor._local_tensor
    if isinstance(tensor, AsyncCollectiveTensor):
        return tensor.elem
    return tensor


def param_numel(model: Any) -> int:
    """Parameters this rank holds (local shards, unpadded; a tied parameter once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += local(p).numel()
    return total


def param_bytes(model: Any) -> Breakdown:
    return _storage_bytes([(term, local(p)) for term, p in _owned(model)])


def grad_bytes(model: Any) -> Breakdown:
    pairs = [(term, local(p.grad)) for term, p in _owned(model) if p.grad is not None]
    return _storage_bytes(pairs)


def optimizer_states(optimizer: Any) -> list[dict[str, Any]]:
    """The state dicts this rank steps (``ZeroRedundancyOptimizer``: its local optimizer's)."""
    if optimizer is None:
        return []
    inner = getattr(optimizer, "optim", optimizer)
    return [dict(s) for s in inner.state.values()]


def optimizer_bytes(optimizer: Any) -> Breakdown:
    pairs = [
        (name, local(value))
        for state in optimizer_states(optimizer)
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    ]
    return _storage_bytes(pairs)


def _param_storages(model: Any) -> set[int]:
    """Storage keys of the parameters as the model holds them now (FSDP2 swaps in the
    unsharded parameters for a block's forward and backward)."""
    return {storage_key(local(p)) for p in model.parameters()} | {
        storage_key(local(b)) for b in model.buffers()
    }


class LocalSavedRecorder(SavedTensorRecorder):
    """Saved activations of one rank: a saved DTensor counts as its local tensor, and the
    parameters excluded are the ones the model holds at the moment of the save."""

    def __init__(self, model: Any, tracker: ModulePathTracker) -> None:
        super().__init__(model, tracker)
        self.model = model

    def pack(self, tensor: Any) -> Any:
        self.excluded = _param_storages(self.model)
        super().pack(local(tensor))
        return tensor.detach()


def measure_saved(model: Any, run: Callable[[], Any]) -> Any:
    """profiler.saved.measure_saved, each save counted as its local shard."""
    return _measure_saved(model, run, LocalSavedRecorder)


class LocalLiveTracker(LiveMemoryTracker):
    """Live bytes of one rank. DTensor ops are let through (``NotImplemented``, as
    ``CommDebugMode`` does), so the tracker sees the local ops they run, collectives'
    buffers included; storages resized in place outside the dispatcher (FSDP2 frees and
    re-allocates the unsharded parameters with ``untyped_storage().resize_``) are re-read
    at every op."""

    def _add(self, tensor: Any, category: str) -> None:
        super()._add(local(tensor), category)

    def _resync(self) -> None:
        for key, (nbytes, category, ref) in list(self._live.items()):
            storage = ref()
            if storage is not None and storage.nbytes() != nbytes:
                self._live[key] = (storage.nbytes(), category, ref)
                self._change(category, storage.nbytes() - nbytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if any(t is DTensor or issubclass(t, DTensor) for t in types):
            return NotImplemented
        self._resync()
        out = func(*args, **(kwargs or {}))
        self._resync()
        for t in flatten_tensors(out):
            self._add(t, f"allocated_in.{self.phase}")
        for t in flatten_tensors(args):  # in-place collectives fill buffers they were given
            self._add(t, f"allocated_in.{self.phase}")
        self._maybe_peak()
        return out
