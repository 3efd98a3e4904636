"""Parameters, gradients and optimizer state, read from the tensors (storages deduplicated)."""

from __future__ import annotations

from typing import Any

from estimator.breakdown import Breakdown
from profiler.naming import add_term, term_name


def storage_key(tensor: Any) -> int:
    """Identity of the storage a tensor keeps alive (works on meta, where data_ptr is 0)."""
    return tensor.untyped_storage()._cdata


def _owned(model: Any) -> list[tuple[str, Any]]:
    """(term, parameter) for each module's own parameters, in named_modules order."""
    return [
        (term_name(path), p)
        for path, module in model.named_modules()
        for _, p in module.named_parameters(recurse=False)
    ]


def measure_params(model: Any) -> Breakdown:
    """numel per term; a tied storage counts once, at its first owner."""
    seen: set[int] = set()
    terms: dict[str, int] = {}
    for term, p in _owned(model):
        key = storage_key(p)
        if key not in seen:
            seen.add(key)
            add_term(terms, term, _logical_numel(p))
    return Breakdown(unit="params", terms=terms)


def _logical_numel(p: Any) -> int:
    """Elements of the weight a parameter stands for: a bitsandbytes 4-bit weight (issue 20)
    packs two codes per byte of a flat uint8 tensor, the weight's own shape in its quant
    state (bitsandbytes/functional.py QuantState.shape; peft/peft_model.py
    get_nb_trainable_parameters doubles a Params4bit's numel for the same reason)."""
    qs = getattr(p, "quant_state", None)
    if qs is None or getattr(qs, "shape", None) is None:
        return p.numel()
    n = 1
    for x in qs.shape:
        n *= x
    return n


def _storage_bytes(pairs: list[tuple[str, Any]]) -> Breakdown:
    seen: set[int] = set()
    terms: dict[str, int] = {}
    for term, t in pairs:
        key = storage_key(t)
        if key not in seen:
            seen.add(key)
            add_term(terms, term, t.untyped_storage().nbytes())
    return Breakdown(unit="bytes", terms=terms)


def param_bytes(model: Any) -> Breakdown:
    """Bytes of the parameter storages, per owning term; a bitsandbytes 4-bit weight's with
    its quant state's tensors (absmax, code, offset, the nested state's; issue 20)."""
    pairs = []
    for term, p in _owned(model):
        pairs.append((term, p))
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            nested = [qs.state2.absmax, qs.state2.code] if qs.state2 is not None else []
            tensors = [qs.absmax, qs.code, qs.offset, *nested]
            pairs += [(term, t) for t in tensors if t is not None]
    return _storage_bytes(pairs)


def grad_bytes(model: Any) -> Breakdown:
    """Bytes of the ``.grad`` storages, per owning term (parameters without grad omitted)."""
    return _storage_bytes([(term, p.grad) for term, p in _owned(model) if p.grad is not None])


def optimizer_bytes(optimizer: Any) -> Breakdown:
    """Bytes of the optimizer's state tensors per state name (exp_avg, exp_avg_sq, step, ...)."""
    import torch

    if optimizer is None:
        return Breakdown(unit="bytes", terms={})
    pairs = [
        (name, value)
        for state in optimizer.state.values()
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    ]
    return _storage_bytes(pairs)
