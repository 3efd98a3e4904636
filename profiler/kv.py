"""KV cache bytes: read from any cache object, after every decode step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def cache_nbytes(cache: Any) -> int:
    """Bytes of the unique storages held by a cache.

    Accepts a tensor, nested tuples / lists / dicts of tensors (legacy HF past_key_values), a
    Hugging Face ``Cache`` (``.layers[i].keys / .values``, or ``key_cache`` / ``value_cache``),
    or any object with an ``nbytes()`` method. A preallocated (static) cache counts its whole
    storage: the memory it holds, not the positions filled so far.
    """
    seen: set[int] = set()
    return _walk(cache, seen)


def _walk(obj: Any, seen: set[int]) -> int:
    import torch

    if obj is None:
        return 0
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage._cdata in seen:
            return 0
        seen.add(storage._cdata)
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(_walk(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_walk(v, seen) for v in obj)
    nbytes = getattr(obj, "nbytes", None)
    if callable(nbytes):
        return int(nbytes())
    if hasattr(obj, "self_attention_cache"):  # HF EncoderDecoderCache
        return _walk(obj.self_attention_cache, seen) + _walk(obj.cross_attention_cache, seen)
    if hasattr(obj, "layers") and isinstance(obj.layers, (list, tuple)):  # HF Cache (>= 4.56)
        return sum(
            _walk(getattr(layer, "keys", None), seen) + _walk(getattr(layer, "values", None), seen)
            for layer in obj.layers
        )
    if hasattr(obj, "key_cache") and hasattr(obj, "value_cache"):  # older HF DynamicCache
        return _walk(obj.key_cache, seen) + _walk(obj.value_cache, seen)
    raise TypeError(f"cannot read cache bytes from a {type(obj).__name__}")


def measure_decode(
    step_fn: Callable[[int], Any], n_steps: int, cache_bytes_fn: Callable[[], int]
) -> list[int]:
    """Cache bytes after each of ``n_steps`` calls ``step_fn(i)`` (i = 0 .. n_steps-1)."""
    sizes = []
    for i in range(n_steps):
        step_fn(i)
        sizes.append(int(cache_bytes_fn()))
    return sizes
