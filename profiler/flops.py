"""FLOPs per module and per op: torch's formulas (flop_counter.flop_registry) and fvcore.

Imports torch at import: import this module only from inside the functions that need it.

Counting convention (torch.utils.flop_counter): matmul-like ops only (mm, addmm, bmm, baddbmm,
conv, sdpa variants with a formula), 2 FLOPs per multiply-add, causal attention counted as the
full rectangle. Each op is attributed to one module (not to every parent as FlopCounterMode's
table does: that is "inclusive", ours is "own"), and to the phase it runs in: ``forward``,
``backward``, or ``recompute`` (a module forward running inside backward, i.e. activation
checkpointing). Forward and recompute ops go to the innermost running module; a backward op
goes to the module that created, in forward, the autograd node executing it
(``profiler.tracking.ModuleStack`` tags every node), so the backward of q/k/v projections that
share one input lands on each projection. Works on the meta device: formulas need shapes only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from estimator.breakdown import Breakdown
from profiler.naming import add_term, term_name
from profiler.results import FlopCount, FvcoreCount, Measured
from profiler.tracking import ModuleStack, node_term


def grouped_mm_flops(a: Any, b: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """aten._grouped_mm (torch.nn.functional.grouped_mm; transformers' MoE experts, issue 22),
    2 FLOPs per multiply-add over the groups the offsets split: [S, K] @ [E, K, N] -> [S, N]
    (each row against its group's matrix: 2 S K N); [M, S] @ [S, N] -> [E, M, N] (the
    backward's weight grad: each group's slice of S, 2 M S N in all)."""
    if a.dim() == 2 and b.dim() == 3:
        return 2 * a.shape[0] * a.shape[1] * b.shape[2]
    if a.dim() == 2 and b.dim() == 2:
        return 2 * a.shape[0] * a.shape[1] * b.shape[1]
    raise NotImplementedError(f"_grouped_mm of {a.dim()}-D @ {b.dim()}-D")


#: formulas torch.utils.flop_counter has not (op packet -> formula)
EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {}
if hasattr(torch.ops.aten, "_grouped_mm"):
    EXTRA_FORMULAS[torch.ops.aten._grouped_mm] = grouped_mm_flops


def gemm_4bit_flops(a: Any, b: Any, shape_b: Any, *args: Any, out_val: Any = None,
                    **kwargs: Any) -> int:  # fmt: skip
    """bitsandbytes' gemm_4bit (bitsandbytes/_ops.py; Linear4bit's forward through
    MatMul4Bit, issue 20): A [..., K] @ dequantize(B).t() with B of ``shape_b`` [N, K], 2 FLOPs
    per multiply-add as aten.mm (its CPU path dequantizes, then F.linear, inside the op where
    this mode does not see it)."""
    return 2 * a.numel() * shape_b[0]


#: formulas for ops outside aten, by name (their namespace exists once their library loads)
NAMED_FORMULAS: dict[str, Callable[..., int]] = {"bitsandbytes.gemm_4bit": gemm_4bit_flops}

#: op-name fragments of matmul-like ops: one of these without a formula is reported as uncounted
MATMUL_LIKE = ("mm", "matmul", "conv", "attention", "linear", "einsum", "bilinear")


class _FlopMode(TorchDispatchMode):
    def __init__(self, tracker: ModuleStack) -> None:
        super().__init__()
        self.tracker = tracker
        self.flops: dict[str, int] = {}
        self.by_op: dict[str, int] = {}
        self.uncounted: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = (flop_registry.get(packet) or EXTRA_FORMULAS.get(packet)
                   or NAMED_FORMULAS.get(str(packet)))  # fmt: skip
        if formula is not None:
            n = int(formula(*args, **kwargs, out_val=out))
            phase = self.tracker.phase()
            if phase == "backward":  # the module that created the autograd node running now
                term = node_term(torch._C._current_autograd_node())
            else:
                term = self.tracker.innermost()
            add_term(self.flops, f"{phase}.{term}", n)
            add_term(self.by_op, f"{phase}.{packet}", n)
        elif any(frag in str(packet).removeprefix("aten.") for frag in MATMUL_LIKE):
            add_term(self.uncounted, str(packet), 1)
        return out


def count_flops(model: Any, run: Callable[[], Any]) -> FlopCount:
    """FLOPs of ``run()`` (forward, and backward if it calls it) per term, phase and op."""
    from torch.utils.checkpoint import set_checkpoint_early_stop

    # early stop would end a recompute inside a module, before its forward post-hook
    with set_checkpoint_early_stop(False), ModuleStack(model) as tracker:
        with _FlopMode(tracker) as mode:
            run()
    return FlopCount(
        flops=Breakdown(unit="flops", terms=mode.flops),
        by_op=Breakdown(unit="flops", terms=mode.by_op),
        uncounted_ops=mode.uncounted,
    )


class _Positional(torch.nn.Module):
    """fvcore traces positional tensors: call ``model(**kwargs)`` from them; return a tensor."""

    def __init__(self, model: Any, keys: list[str]) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *tensors: Any) -> Any:
        out = self.model(**dict(zip(self.keys, tensors, strict=True)))
        return primary_tensor(out)


def primary_tensor(out: Any) -> Any:
    """The tensor a forward is about: itself, ``.logits``, ``.last_hidden_state``,
    ``.hidden_states`` (a tensor) or ``[0]``."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("logits", "last_hidden_state", "hidden_states"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    return out[0]


def own_counts(inclusive: dict[str, int]) -> dict[str, int]:
    """Per-module inclusive counts (``""`` the root) -> each module's own (minus children)."""
    own = dict(inclusive)
    for path, n in inclusive.items():
        if path:
            parent = path.rpartition(".")[0]
            if parent in own:
                own[parent] -= n
    return own


def fvcore_flops(model: Any, inputs: Any) -> FvcoreCount:
    """fvcore's forward FLOPs per term (its MACs x 2), unsupported ops and uncalled modules."""
    try:
        with warnings.catch_warnings():  # fvcore scripts a function at import: torch warns
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.13's wording
            from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return FvcoreCount(flops=Measured.missing("fvcore is not installed"))
    prefix = ""
    if isinstance(inputs, dict):
        model, inputs, prefix = _Positional(model, list(inputs)), tuple(inputs.values()), "model"
    elif isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    try:
        analysis = FlopCountAnalysis(model, tuple(inputs))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        macs_inclusive = dict(analysis.by_module())
        unsupported = {str(k): int(v) for k, v in analysis.unsupported_ops().items()}
        uncalled = sorted(analysis.uncalled_modules())
    except Exception as exc:  # tracing fails on some models / devices (e.g. meta)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return FvcoreCount(flops=Measured.missing(f"fvcore failed: {first[:200]}"))
    terms: dict[str, int] = {}
    for path, macs in own_counts(macs_inclusive).items():
        if prefix and path in ("", prefix):
            path = ""  # the adapter and the root module
        elif prefix:
            path = path.removeprefix(prefix + ".")
        if macs:
            add_term(terms, f"forward.{term_name(path)}", 2 * int(macs))  # MACs -> FLOPs
    breakdown = Breakdown(unit="flops", terms=terms)
    strip = (lambda p: p.removeprefix(prefix + ".")) if prefix else (lambda p: p)
    return FvcoreCount(
        flops=Measured.of(breakdown, "fvcore counts MACs of matmul, conv, norms, pooling"),
        unsupported_ops=unsupported,
        uncalled_modules=[strip(p) for p in uncalled],
    )
