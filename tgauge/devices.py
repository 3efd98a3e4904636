"""The device checks made before a run: the memory a device offers (``available_bytes``), the
refusal of a CPU point the estimator says exceeds this machine's memory (``check_host_memory``,
as the kernel's OOM killer would otherwise end the run) and whether a ``--device`` value is
valid and present here (``check_device``). Shared by `tgauge profile` and `tgauge validate`;
torch is imported inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from tgauge.app import UserError
from tgauge.format import human_bytes


def available_bytes(device: str) -> int | None:
    """Memory the device offers, to say whether the estimator predicted a fit: on CPU the
    limit this process actually runs under (``memory_budget``), not the machine's RAM."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    return memory_budget().usable_bytes


#: a cgroup limit at or above this means "no limit" (v1 writes 2**63 rounded to a page)
NO_LIMIT = 2**60


class MemoryBudget(NamedTuple):
    """What bounds this process's memory, in bytes (None: no such bound here)."""

    physical_bytes: int | None  # the machine's RAM (sysconf)
    cgroup_bytes: int | None  # the smallest memory limit of the process's cgroups (v2 / v1)
    address_space_bytes: int | None  # RLIMIT_AS less the address space already mapped

    @property
    def usable_bytes(self) -> int | None:
        """The least of the bounds: what a point may allocate before failing."""
        known = [b for b in self if b is not None]
        return min(known) if known else None

    @property
    def kill_bytes(self) -> int | None:
        """Past this the kernel's OOM killer ends the process (RAM or the cgroup limit); past
        RLIMIT_AS an allocation fails with an exception instead, a point that did not fit."""
        known = [b for b in (self.physical_bytes, self.cgroup_bytes) if b is not None]
        return min(known) if known else None

    def describe(self, n_bytes: int) -> str:
        """'this machine has X' or 'this process may use X (cgroup memory limit)'."""
        if n_bytes == self.physical_bytes:
            return f"this machine has {human_bytes(n_bytes)}"
        why = "its cgroup's memory limit" if n_bytes == self.cgroup_bytes else "RLIMIT_AS"
        return f"this process may use {human_bytes(n_bytes)} ({why})"


def memory_budget(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")
) -> MemoryBudget:
    """The bounds of this process's memory: the RAM, the cgroup limit (v2 ``memory.max``,
    v1 ``memory.limit_in_bytes``, the least along the cgroup's path, as the kernel's
    mem_cgroup charge checks every ancestor: mm/memcontrol.c try_charge) and RLIMIT_AS
    (mm/mmap.c may_expand_vm: the whole address space, so what is mapped already counts)."""
    import os

    try:
        physical: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = None
    return MemoryBudget(physical, _cgroup_limit(cgroup_root, proc), _address_space_left(proc))


def _cgroup_limit(root: Path, proc: Path) -> int | None:
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return None
    files = []
    for line in lines:  # "0::/path" (v2) or "4:memory:/path" (v1)
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        # the path as the host names it; inside a container the cgroup is often mounted at
        # the root: every folder from the root along the path that exists here is read
        files += [base.joinpath(*parts[:k], name) for k in range(len(parts) + 1)]
    limits = []
    for file in files:
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < NO_LIMIT:
            limits.append(int(text))
    return min(limits) if limits else None


def _address_space_left(proc: Path) -> int | None:
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = 0
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    except OSError:
        pass
    return max(0, soft - mapped)


def check_host_memory(points: list[Any], available: int | None, what: str | None = None) -> None:
    """Refuse, before any run, a CPU point the estimator says exceeds this machine's memory:
    on CPU the kernel's OOM killer, not an exception, would end the run. ``what``: how the
    message names ``available`` (default: this machine's)."""
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
                f"{human_bytes(peak)} (estimate); "
                f"{what or f'this machine has {human_bytes(available)}'}: "
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
