"""The device checks made before a run: the memory a device offers (``available_bytes``), the
refusal of a CPU point the estimator says exceeds this machine's memory (``check_host_memory``,
as the kernel's OOM killer would otherwise end the run) and whether a ``--device`` value is
valid and present here (``check_device``). Shared by `tgauge profile` and `tgauge validate`;
torch is imported inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

from tgauge.app import UserError
from tgauge.format import human_bytes


def available_bytes(device: str) -> int | None:
    """Memory the device offers, to say whether the estimator predicted a fit."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_host_memory(points: list[Any], available: int | None) -> None:
    """Refuse, before any run, a CPU point the estimator says exceeds this machine's memory:
    on CPU the kernel's OOM killer, not an exception, would end the run."""
    from estimator import estimate

    if available is None:
        return
    for spec, w, *_ in points:  # (spec, workload) or a validate Run
        # every field stated, as the run measures it (never the model's usual settings)
        run = type(w).model_validate(w.model_dump() | {"device": "cpu"})
        peak = estimate(spec, run).peak_memory_bytes
        if peak > available:
            raise UserError(
                f"{spec.name} {w.mode} b={w.batch_size} s={w.seq_len} needs about "
                f"{human_bytes(peak)} (estimate); this machine has {human_bytes(available)}: "
                "lower --batch-size or --seq-len"
            )


def check_device(device: str, allowed: tuple[str, ...] = ("cpu", "cuda")) -> None:
    """UserError unless ``device`` is one of ``allowed`` and, for cuda, present here."""
    if device not in allowed:
        options = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
        raise UserError(f"device={device!r} is invalid: use {options}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "device='cuda' is not available here (CUDA is not available on this machine): "
                "use cpu"
            )
