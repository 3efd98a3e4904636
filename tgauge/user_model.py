"""Your own nn.Module as a `tgauge profile` MODEL: ``path/to/file.py:factory``.

``factory`` is a callable in that file returning an nn.Module, or ``(module, inputs)``. It is
called under ``torch.device(device)`` (so ``--device meta`` allocates nothing), with the
workload's sizes its signature names (``batch_size``, ``seq_len``, ``mode``, ``device``).
Inputs: a tensor, a tuple of positional arguments or a dict of keyword arguments
(profiler.run.call_model); left out, token ids [b, s] for a model whose first module is an
nn.Embedding, else refused by name. examples/mymodel.py is one.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from estimator.spec import Workload
from tgauge.app import UserError

_REF = re.compile(r"^(?P<path>.+\.py):(?P<name>[A-Za-z_]\w*)$")
#: the workload fields a factory may ask for by name
_SIZES = ("batch_size", "seq_len", "mode", "device")


def is_python_model(model_arg: str) -> bool:
    """``file.py:factory`` or a bare ``file.py`` (refused with the form to use)."""
    return bool(_REF.match(model_arg)) or model_arg.lower().endswith(".py")


def _factory(model_arg: str) -> tuple[Path, str, Any]:
    """(file, factory name, the callable); UserError naming what is wrong."""
    found = _REF.match(model_arg)
    if found is None:
        raise UserError(
            f"MODEL={model_arg!r} is a Python file: name the callable that builds the model, "
            f"as {model_arg}:build (it returns an nn.Module, or (module, inputs))"
        )
    path, name = Path(found["path"]), found["name"]
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    module_name = f"_tgauge_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: its first line, never a traceback
        first = (str(exc).splitlines() or [""])[0]
        raise UserError(f"importing {path} failed: {type(exc).__name__}: {first}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"{path} has no callable {name!r} (give file.py:FACTORY)")
    return path, name, factory


def _call(factory: Any, name: str, workload: Workload, device: str) -> tuple[Any, Any]:
    """(module, inputs or None) from ``factory``, called under torch.device(device)."""
    import torch

    asked = inspect.signature(factory).parameters
    values = {
        "batch_size": workload.batch_size,
        "seq_len": workload.seq_len,
        "mode": workload.mode,
        "device": device,
    }
    kwargs = {k: values[k] for k in _SIZES if k in asked}
    try:
        with torch.device(device):
            made = factory(**kwargs)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise UserError(f"{name}() failed: {type(exc).__name__}: {first}") from None
    model, inputs = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, torch.nn.Module):
        raise UserError(
            f"{name}() returned {type(model).__name__}: it must return an nn.Module or "
            "(module, inputs)"
        )
    return model, inputs


def _token_ids(model: Any, workload: Workload, device: str) -> Any:
    """Token ids [b, s] below the vocabulary of the model's first nn.Embedding."""
    import torch

    first = next((m for m in model.modules() if m is not model), None)
    if not isinstance(first, torch.nn.Embedding):
        raise UserError(
            "the factory returned no inputs and the model does not start with an nn.Embedding "
            "(tgauge would only guess its inputs): return (module, inputs)"
        )
    gen = torch.Generator().manual_seed(0)
    shape = (workload.batch_size, workload.seq_len)
    return torch.randint(0, first.num_embeddings, shape, generator=gen).to(device)


def _to(inputs: Any, device: str) -> Any:
    """``inputs`` (tensor, tuple / list or dict of them) on ``device``."""
    if isinstance(inputs, dict):
        return {k: _to(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to(v, device) for v in inputs)
    return inputs.to(device) if hasattr(inputs, "to") else inputs


def python_target(model_arg: str, workload: Workload, device: str) -> tuple[Any, Any, str]:
    """(module, inputs, implementation label) of ``file.py:factory``: the module in the
    workload's dtype on ``device``, its inputs there; tgauge/targets.py adds the optimizer."""
    import torch

    if workload.mode == "decode":
        raise UserError(
            "--mode decode needs a KV-cache interface tgauge knows (a preset, spec file or "
            "config.json); profile your own module in train or prefill"
        )
    path, name, factory = _factory(model_arg)
    model, inputs = _call(factory, name, workload, device)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    model = model.to(device=device, dtype=dtypes[workload.dtype])
    inputs = _token_ids(model, workload, device) if inputs is None else _to(inputs, device)
    return model, inputs, f"user {path.name}:{name}"
