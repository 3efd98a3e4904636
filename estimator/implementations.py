"""Where one implementation of a module kind differs from our reference model, as data.

A spec says which code it describes (``ModelSpec.implementation``: "reference", our
reference_model/, or "hf", the transformers class of ``hf_architecture``). The estimator's
term functions ask this registry for the rule of a module kind under the spec's
implementation, as torch's flop_counter keeps one formula per op: a kind without an entry for
an implementation falls back to the reference rule, so an implementation lists only what its
code does differently (saves, allocates, caches), each rule naming the code it mirrors.

Kinds are dotted names of what a rule answers, e.g. ``"saved.ffn.act"`` (bytes an FFN
activation saves), ``"saved.mask"``; the signature of a kind is fixed by its reference rule.
A precision mode that changes what a kind saves registers a variant under a second key, the
kind with ``@`` and the mode appended (``"saved.linear@autocast"``, estimator/autocast.py);
``rule(kind, spec, workload)`` takes the variant first when the workload runs in that mode
(``workload.autocast`` set), under the spec's implementation, else the reference's, and
falls back to the plain kind.

Modules that register rules are imported on the first lookup (``PROVIDERS``), so importing
one term module never pulls in another implementation's rules by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from estimator.spec import ModelSpec, Workload

F = TypeVar("F", bound=Callable[..., Any])

#: (kind, implementation) -> rule
RULES: dict[tuple[str, str], Callable[..., Any]] = {}
#: the modules that register rules (imported once, on the first lookup)
PROVIDERS: tuple[str, ...] = (
    "estimator.activations",
    "estimator.kv_cache",
    "estimator.hf_rules",
    "estimator.autocast",
    "estimator.hf_rules_decoders",
    "estimator.hf_inference",
    "estimator.hf_rules_encoders",
    "estimator.hf_passes",
    "estimator.hf_passes_t5",
    "estimator.hf_autocast",
)
_loaded = False


def register(kind: str, *implementations: str) -> Callable[[F], F]:
    """Decorator: ``fn`` is the rule of ``kind`` for each of ``implementations``."""

    def deco(fn: F) -> F:
        for impl in implementations:
            key = (kind, impl)
            if key in RULES and RULES[key] is not fn:
                raise ValueError(f"two rules for {kind!r} under {impl!r}")
            RULES[key] = fn
        return fn

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in PROVIDERS:
            importlib.import_module(name)


def precision_mode(workload: Workload | None) -> str | None:
    """The second key of a workload's rules: "autocast" under torch.autocast, else None."""
    return "autocast" if workload is not None and workload.autocast else None


def rule(kind: str, spec: ModelSpec | str, workload: Workload | None = None) -> Callable[..., Any]:
    """The rule of ``kind`` for the spec's class (``hf_architecture``, where one class of an
    implementation differs from the others, e.g. "T5ForConditionalGeneration"), else for its
    implementation (or an implementation's name), else the reference rule; with a
    ``workload`` in a precision mode, that mode's variant (``kind@mode``) first."""
    _load()
    impl = spec if isinstance(spec, str) else spec.implementation
    cls = None if isinstance(spec, str) or impl == "reference" else spec.hf_architecture
    mode = precision_mode(workload)
    found = None
    for name in ((f"{kind}@{mode}",) if mode is not None else ()) + (kind,):
        found = found or (cls and RULES.get((name, cls))) or RULES.get((name, impl))
        found = found or RULES.get((name, "reference"))
    if found is None:
        raise KeyError(f"no rule registered for {kind!r}")
    return found


def overrides(implementation: str) -> list[str]:
    """The kinds ``implementation`` does differently from the reference model (sorted)."""
    _load()
    return sorted(
        k for k, impl in RULES if impl == implementation and implementation != "reference"
    )
