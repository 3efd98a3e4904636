"""Activations saved for backward, exactly: every unique storage packed by autograd.

Imports torch at import: import this module only from inside the functions that need it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from estimator.breakdown import Breakdown
from profiler.naming import add_term
from profiler.params import storage_key
from profiler.results import SavedTensors
from profiler.tracking import ModulePathTracker


def model_storages(model: Any) -> set[int]:
    """Storage keys of the model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return {storage_key(t) for t in tensors}


class SavedTensorRecorder:
    """Pack hook recording each saved storage once, at the innermost module saving it.

    A saved tensor may be a view: the whole storage it keeps alive is counted. Storages of the
    model's parameters and buffers are excluded. Saved during a checkpoint recompute (a module
    forward running inside backward): counted in ``recompute``, apart. Storages are held by
    weak reference only, so a freed address reused later is counted as a new storage.
    """

    def __init__(self, model: Any, tracker: ModulePathTracker) -> None:
        self.tracker = tracker
        self.excluded = model_storages(model)
        self.seen: dict[str, dict[int, weakref.ref]] = {"activations": {}, "recompute": {}}
        self.terms: dict[str, dict[str, int]] = {"activations": {}, "recompute": {}}

    def pack(self, tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        key = storage_key(tensor)
        kind = "recompute" if self.tracker.phase() == "recompute" else "activations"
        seen = self.seen[kind]
        if key not in self.excluded and (key not in seen or seen[key]() is None):
            seen[key] = weakref.ref(storage)
            add_term(self.terms[kind], self.tracker.innermost(), storage.nbytes())
        # a detached alias (same storage, no grad_fn): returning ``tensor`` itself makes a
        # tensor -> grad_fn -> saved tensor cycle through C++ that the garbage collector
        # cannot see; a forward that fails (out of memory) never runs the backward that
        # breaks it, and every tensor of the step stays alive
        return tensor.detach()

    def result(self) -> SavedTensors:
        notes = []
        if self.tracker.recompute_seen and not self.terms["recompute"]:
            notes.append(
                "a checkpoint recompute ran in backward, but torch.utils.checkpoint packs its "
                "saves with its own hooks: recompute saves not measured"
            )
        return SavedTensors(
            notes=notes,
            activations=Breakdown(unit="bytes", terms=self.terms["activations"]),
            recompute=Breakdown(unit="bytes", terms=self.terms["recompute"]),
        )


def measure_saved(
    model: Any, run: Callable[[], Any], recorder_cls: type = SavedTensorRecorder
) -> SavedTensors:
    """Run ``run()`` (a forward, and backward if you want recompute seen) and record saves;
    ``recorder_cls``: the pack hook's recorder (profiler/distributed/memory.py counts local
    shards with its own)."""
    from torch.utils.checkpoint import set_checkpoint_early_stop

    # early stop would end a recompute inside a module, before its forward post-hook
    with set_checkpoint_early_stop(False), ModulePathTracker(model) as tracker:
        recorder = recorder_cls(model, tracker)
        with torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda t: t):
            run()
    return recorder.result()
