"""The temporaries of one ``optimizer.step``, per (optimizer, implementation), replayed from the
step function's own code with its Python locals (``_Frame``: a name keeps its tensor until it is
rebound or deleted, so a for-loop holds the previous tensor's result while it allocates the
next one). The states themselves are estimator/terms/optimizer.py's. Rules, torch's default
hyper-parameters (Adam weight_decay 0, AdamW 0.01 decoupled, SGD weight_decay 0: no copy of the
gradients; d the optimizer's dtype, n_t the numel of tensor t):
  adam/adamw fused    none (torch._fused_adamw_ updates in place; adam.py _fused_adam)
  adam/adamw foreach  _foreach_sqrt(exp_avg_sqs) of a whole (device, dtype) group
                      (adam.py _multi_tensor_adam): one more copy of the states' bytes
  adam/adamw forloop  per tensor exp_avg_sq.sqrt() and its quotient, while the previous
                      tensor's denom lives: max_t (n_{t-1} + 2 n_t) (adam.py _single_tensor_adam)
  sgd, sgd-momentum   none in any impl (steady state: buffers exist; sgd.py)
  adafactor           per matrix row_var @ col_var [.., r, c], per vector grad * grad and a
                      clone of the variance (_adafactor.py _single_tensor_adafactor /
                      _multi_tensor_adafactor, foreach grouped by device, dtype and ndim > 1)
  adamw-8bit          CUDA: none (one blockwise kernel in place, backends/cuda/ops.py
                      _optimizer_update_8bit_blockwise_impl); CPU: one custom op that
                      dequantizes to fp32 (backends/cpu/ops.py
                      _optimizer_update_8bit_blockwise_cpu): state1, state2, grad * scale,
                      sqrt and denominator, 5 fp32 copies of the largest 8-bit tensor (+1
                      for a non-fp32 parameter's fp32 copy); modelled, not measured
0-dim temporaries (norms, step increments) are not counted. The step depends on the spec and
the structure only (no size of the run), so each answer is cached.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from estimator.shapes import Shapes
from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.terms.finetune import trainable_shapes
from estimator.terms.optimizer import BNB_MIN_8BIT_SIZE, optimizer_dtype
from estimator.terms.params import param_tensor_shapes

Shape = tuple[int, ...]


class _Frame:
    """The Python locals of a step function: each name holds a tensor (or a list of them,
    one entry) until the name is rebound or deleted; live bytes above the step's start."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}  # name -> tensor id
        self.sizes: dict[int, int] = {}  # tensor id -> bytes
        self.live = self.peak = self._count = 0

    def new(self, name: str, n_bytes: int) -> None:
        """``name = <a new tensor>``: allocated while the name's old tensor still lives."""
        self._count += 1
        tid = self._count
        self.sizes[tid] = n_bytes
        self.live += n_bytes
        self.peak = max(self.peak, self.live)
        self._bind(name, tid)

    def alias(self, name: str, other: str) -> None:
        """``name = other`` (the same tensor)."""
        self._bind(name, self.names[other])

    def drop(self, name: str) -> None:
        """``del name`` (or an expression temporary going out of scope)."""
        old = self.names.pop(name, None)
        if old is not None and old not in self.names.values():
            self.live -= self.sizes.pop(old)

    def _bind(self, name: str, tid: int) -> None:
        self.drop(name)
        self.names[name] = tid


def _adam_foreach(f: _Frame, groups: list[list[Shape]], d: str) -> None:
    for group in groups:  # exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)
        f.new("exp_avg_sq_sqrt", sum(nbytes(math.prod(s), d) for s in group))


def _adam_forloop(f: _Frame, groups: list[list[Shape]], d: str) -> None:
    for shape in (s for group in groups for s in group):
        n = nbytes(math.prod(shape), d)
        f.new("sqrt", n)  # exp_avg_sq.sqrt()
        f.new("quotient", n)  # ... / bias_correction2_sqrt
        f.drop("sqrt")
        f.alias("denom", "quotient")  # denom = (...).add_(eps): the old denom is freed
        f.drop("quotient")


def _adafactor_matrix(f: _Frame, shapes: list[Shape], d: str, foreach: bool) -> None:
    """row_mean / col_mean (vector norms), var_estimate = row_var @ col_var, and its
    row_var.mean; ``update`` is var_estimate (clamp_, rsqrt_ and mul_ in place)."""
    rows = [nbytes(math.prod(s[:-1]), d) for s in shapes]  # [.., r, 1]
    cols = [nbytes(math.prod(s[:-2]) * s[-1], d) for s in shapes]  # [.., 1, c]
    full = [nbytes(math.prod(s), d) for s in shapes]
    means = [nbytes(math.prod(s[:-2]), d) for s in shapes]  # row_var.mean(-2) [.., 1, 1]
    if foreach:  # lists, each deleted after use (del row_means, col_means, row_var_means)
        for name, sizes in (("row_means", rows), ("col_means", cols)):
            f.new(name, sum(sizes))
            f.drop(name)
        f.new("var_estimates", sum(full))
        f.new("row_var_means", sum(means))
        f.drop("row_var_means")
        f.alias("updates", "var_estimates")
        return
    for row, col, n, mean in zip(rows, cols, full, means, strict=True):
        f.new("row_mean", row)
        f.new("col_mean", col)
        f.new("var_estimate", n)
        f.new("row_var_mean", mean)
        f.drop("row_var_mean")
        f.alias("update", "var_estimate")


def _adafactor_vector(f: _Frame, shapes: list[Shape], d: str, foreach: bool) -> None:
    """grad * grad, then var_estimate = variance.clone(); ``update`` is var_estimate."""
    sizes = [nbytes(math.prod(s), d) for s in shapes]
    if foreach:
        f.new("grads_squared", sum(sizes))
        f.drop("grads_squared")  # del grads_squared
        f.new("var_estimates", sum(sizes))
        f.alias("updates", "var_estimates")
        return
    for n in sizes:
        f.new("grad_squared", n)
        f.new("var_estimate", n)
        f.alias("update", "var_estimate")


def _adafactor(f: _Frame, groups: list[list[Shape]], d: str, foreach: bool) -> None:
    for group in groups:
        if foreach:  # _group_tensors_by_device_dtype_and_is_multidim: first-seen order
            kinds = list(dict.fromkeys(len(s) > 1 for s in group))
            for matrix in kinds:
                part = [s for s in group if (len(s) > 1) == matrix]
                (_adafactor_matrix if matrix else _adafactor_vector)(f, part, d, True)
            continue
        for s in group:
            (_adafactor_matrix if len(s) > 1 else _adafactor_vector)(f, [s], d, False)


def _bnb_8bit(f: _Frame, groups: list[list[Shape]], d: str, device: str) -> None:
    if device == "cuda":
        return
    copies = 5 + (d != "fp32")  # fp32 state1, state2, grad, sqrt, quotient (+ param copy)
    for n in (math.prod(s) for group in groups for s in group):
        if n >= BNB_MIN_8BIT_SIZE:
            f.new("fp32_working_set", copies * nbytes(n, "fp32"))
            f.drop("fp32_working_set")  # the op's locals end with it


def _none(f: _Frame, groups: list[list[Shape]], d: str) -> None:
    """In place: no temporaries."""


Rule = Callable[[_Frame, list[list[Shape]], str], None]
_RULES: dict[tuple[str, str], Rule] = {
    **{(opt, "fused"): _none for opt in ("adam", "adamw", "sgd", "sgd-momentum")},
    **{(opt, "foreach"): _adam_foreach for opt in ("adam", "adamw")},
    **{(opt, "forloop"): _adam_forloop for opt in ("adam", "adamw")},
    **{(opt, impl): _none for opt in ("sgd", "sgd-momentum") for impl in ("foreach", "forloop")},
    ("adafactor", "foreach"): lambda f, g, d: _adafactor(f, g, d, True),
    ("adafactor", "forloop"): lambda f, g, d: _adafactor(f, g, d, False),
}


def step_temporaries_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """Highest bytes allocated by one steady-state ``optimizer.step`` above weights, states
    and gradients (the rule of (optimizer, resolved impl); module docstring)."""
    if sh.optimizer_impl is None:
        return 0
    shapes = param_tensor_shapes(spec)
    if sh.finetune.kind != "full":  # issue 20: the trainable tensors only
        shapes = trainable_shapes(spec, sh)
    return _replay(shapes, sh.optimizer, sh.optimizer_impl, optimizer_dtype(sh), sh.device)


@functools.lru_cache(maxsize=256)  # plan and sweep searches re-evaluate the same step
def _replay(shapes: tuple[Shape, ...], optimizer: str, impl: str, d: str, device: str) -> int:
    groups = [list(shapes)]  # one (device, dtype) group: all in d
    frame = _Frame()
    if optimizer == "adamw-8bit":
        _bnb_8bit(frame, groups, d, device)
    else:
        _RULES[(optimizer, impl)](frame, groups, d)
    return frame.peak


def rank_step_temporaries(spec: ModelSpec, parallel: Any, sh: Shapes) -> int:
    """The optimizer step's temporaries over the tensors the rank steps (its shards, its
    ZeRO-1 partition, in parameter order): the replay of estimator/replay/optimizer_step.py
    on the rank's own shapes (a for-loop step's largest temporaries are those of the rank's
    largest tensor, not a share of the whole model's)."""
    from estimator.terms.ranks import optimizer_shapes

    if sh.optimizer_impl is None:
        return 0
    shapes = tuple(optimizer_shapes(spec, parallel))
    return _replay(shapes, sh.optimizer, sh.optimizer_impl, optimizer_dtype(sh), sh.device)
