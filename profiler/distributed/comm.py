"""Collectives of one rank, per op type: counts from torch's ``CommDebugMode`` and their bytes.

Imports torch at import: import this module only from inside the functions that need it.

``CommDebugMode`` (torch/distributed/tensor/debug/_comm_mode.py) counts every c10d and
functional collective that reaches the dispatcher (FSDP2's ``all_gather_into_tensor`` and
``reduce_scatter_tensor``, DTensor's redistributions, DDP's bucket all-reduces, the broadcasts
of ``ZeroRedundancyOptimizer``), but records no sizes. ``CommBytesMode`` is that mode with one
addition: each collective it counts also adds its payload to ``bytes_by_op``.

Byte convention (per rank, per call, ``numel * element_size`` of the tensors named):
- ``all_gather``: the gathered output (world x the rank's input);
- ``reduce_scatter``: the input that is reduced (world x the rank's output);
- ``all_reduce``, ``broadcast``: the tensor(s) reduced / broadcast;
- ``all_to_all``: the input.
A coalesced call (one c10d op over a list of tensors) is one call; its bytes sum the list.
So for a ring on p ranks, the bytes a rank sends are ``(p - 1) / p`` x these for all-gather and
reduce-scatter and ``2 (p - 1) / p`` x these for all-reduce.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.distributed.tensor.debug import CommDebugMode

c10d = torch.ops.c10d
funcol = torch.ops._c10d_functional

#: op packet -> (op type, which argument holds the tensors the bytes count)
_OPS: dict[Any, tuple[str, str]] = {
    c10d._allgather_base_: ("all_gather", "output"),
    c10d.allgather_: ("all_gather", "output"),
    c10d.allgather_into_tensor_coalesced_: ("all_gather", "output"),
    c10d._reduce_scatter_base_: ("reduce_scatter", "input"),
    c10d.reduce_scatter_: ("reduce_scatter", "input"),
    c10d.reduce_scatter_tensor_coalesced_: ("reduce_scatter", "input"),
    c10d.allreduce_: ("all_reduce", "input"),
    c10d.allreduce_coalesced_: ("all_reduce", "input"),
    c10d.broadcast_: ("broadcast", "input"),
    c10d.alltoall_base_: ("all_to_all", "input"),
    funcol.all_gather_into_tensor: ("all_gather", "result"),
    funcol.all_gather_into_tensor_coalesced: ("all_gather", "result"),
    funcol.reduce_scatter_tensor: ("reduce_scatter", "input"),
    funcol.reduce_scatter_tensor_coalesced: ("reduce_scatter", "input"),
    funcol.all_reduce: ("all_reduce", "input"),
    funcol.all_reduce_coalesced: ("all_reduce", "input"),
    funcol.all_to_all_single: ("all_to_all", "input"),
}

#: argument position of the tensors that count, per c10d op whose output comes first
_OUTPUT_FIRST = {
    c10d._allgather_base_,
    c10d.allgather_,
    c10d.allgather_into_tensor_coalesced_,
    c10d._reduce_scatter_base_,
    c10d.reduce_scatter_,
    c10d.reduce_scatter_tensor_coalesced_,
    c10d.alltoall_base_,
}


def op_type(packet: Any) -> str:
    """``all_gather`` / ``reduce_scatter`` / ``all_reduce`` / ... of an op packet (else its
    name, for a collective this module has no entry for)."""
    known = _OPS.get(packet)
    return known[0] if known else str(packet).split(".")[-1].rstrip("_")


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def payload_bytes(packet: Any, args: tuple[Any, ...], out: Any) -> int:
    """Bytes of one collective call under the convention of the module docstring."""
    kind, which = _OPS.get(packet, ("", "input"))
    if which == "result":
        return _nbytes(out)
    if packet in _OUTPUT_FIRST:
        return _nbytes(args[0] if which == "output" else args[1])
    return _nbytes(args[0])


class CommBytesMode(CommDebugMode):
    """``CommDebugMode`` that also sums each counted collective's bytes per op type."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_by_op: dict[str, int] = defaultdict(int)
        self.count_by_op: dict[str, int] = defaultdict(int)
        self.phase = "forward"  # set by the caller as the step moves on
        self.by_phase: dict[str, dict[str, int]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        before = self.get_total_counts()
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if out is not NotImplemented and self.get_total_counts() > before:
            packet = func._overloadpacket
            kind = op_type(packet)
            nbytes = payload_bytes(packet, args, out)
            self.count_by_op[kind] += 1
            self.bytes_by_op[kind] += nbytes
            phase = self.by_phase.setdefault(self.phase, {})
            phase[f"comm.{kind}.count"] = phase.get(f"comm.{kind}.count", 0) + 1
            phase[f"comm.{kind}.bytes"] = phase.get(f"comm.{kind}.bytes", 0) + nbytes
        return out

    def terms(self) -> dict[str, int]:
        """``comm.<op>.count`` and ``comm.<op>.bytes`` per op type seen."""
        terms: dict[str, int] = {}
        for kind in sorted(self.count_by_op):
            terms[f"comm.{kind}.count"] = self.count_by_op[kind]
            terms[f"comm.{kind}.bytes"] = self.bytes_by_op[kind]
        return terms
