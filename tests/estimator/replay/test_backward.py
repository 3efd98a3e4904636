"""The backward replay (estimator/replay/backward.py): its bookkeeping is closed (every activation
freed once, every parameter gradient kept), on every training case of the validation matrix
and its variants; its peak against measurement is tests/tgauge/test_validation_matrix.py."""

from __future__ import annotations

import pytest

from estimator.replay.backward import backward_walk
from estimator.replay.peak import peak_memory
from estimator.rules.autocast import unsupported
from estimator.shapes import resolve
from estimator.spec.dtypes import nbytes
from estimator.terms.memory import group, input_bytes, memory
from estimator.terms.params import params
from tgauge.matrix import cases

TRAIN = [c for c in cases() if c.workload.mode == "train"]
VARIANTS = [
    {},
    {"checkpointing": "full"},
    {"dropout": 0.1},
    {"attention_impl": "fused"},
    {"attention_pattern": "chunked", "window": 5},
    {"attention_pattern": "sliding_window", "window": 5, "attention_impl": "fused"},
]


def _modelled(case, update) -> bool:
    """A variant the estimator models (autocast: not with dropout, checkpointing, ...)."""
    workload = case.workload.model_copy(update=update)
    return not (workload.autocast and unsupported(case.spec, resolve(case.spec, workload)))


WALKS = [
    pytest.param(c, u, id=f"{c.name}-" + ",".join(f"{k}={v}" for k, v in u.items()))
    for c in TRAIN
    for u in VARIANTS
    if _modelled(c, u)
]


@pytest.mark.parametrize(("case", "update"), WALKS)
def test_backward_walk_frees_every_activation_and_keeps_every_gradient(case, update) -> None:
    spec, workload = case.spec, case.workload.model_copy(update=update)
    sh = resolve(spec, workload)
    mem = memory(spec, sh)
    saved = {k[len("activations.") :]: v for k, v in mem.items() if k.startswith("act")}
    grads = {k: nbytes(v, workload.dtype) for k, v in params(spec).terms.items()}
    start = 10**9
    live = backward_walk(spec, sh, saved, grads, start)
    assert live.now == start - sum(saved.values()) + sum(grads.values())
    assert live.peak >= start + sum(grads.values()) - sum(saved.values())


@pytest.mark.parametrize("case", TRAIN, ids=[c.name for c in TRAIN])
def test_training_peak_is_at_least_the_forward_and_the_step(case) -> None:
    spec, sh = case.spec, resolve(case.spec, case.workload)
    mem = memory(spec, sh)
    states = group(mem, "weights") + group(mem, "optimizer") + input_bytes(spec, sh)
    peak, _ = peak_memory(spec, sh, mem)
    assert peak >= states + group(mem, "activations")
    assert peak >= states + group(mem, "gradients")
