"""Where one implementation of a module kind differs from our reference model, as data.

A spec says which code it describes (``ModelSpec.implementation``: "reference", our
reference_model/, or "hf", the transformers class of ``hf_architecture``). The estimator's
term functions and walkers ask this registry for the rule of a module kind under the spec's
implementation, as torch's flop_counter keeps one formula per op: a kind without an entry for
an implementation falls back to the reference rule, so an implementation lists only what its
code does differently (saves, allocates, caches), each rule naming the code it mirrors.

Kinds are dotted names of what a rule answers, e.g. ``"saved.ffn.act"`` (bytes an FFN
activation saves), ``"saved.mask"``; the signature of a kind is fixed by its reference rule.
A precision mode that changes what a kind saves registers a variant under a second key, the
kind with ``@`` and the mode appended (``"saved.linear@autocast"``, estimator/rules/autocast.py);
``rule(kind, spec, shapes)`` takes the variant first when the run is in that mode
(``shapes.autocast`` set), under the spec's implementation, else the reference's, and falls
back to the plain kind.

Modules that register rules are imported on the first lookup (``PROVIDERS``), so a term module
never imports a rule module, and the rule modules import only what sits below them (spec,
shapes, the live tracker, other rules).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from estimator.spec.model import ModelSpec

F = TypeVar("F", bound=Callable[..., Any])

#: (kind, implementation) -> rule
RULES: dict[tuple[str, str], Callable[..., Any]] = {}
#: the modules that register rules (imported once, on the first lookup)
PROVIDERS: tuple[str, ...] = (
    "estimator.rules.reference.saved",
    "estimator.rules.reference.held",
    "estimator.rules.reference.backward",
    "estimator.rules.reference.passes",
    "estimator.rules.autocast",
    "estimator.rules.hf.common",
    "estimator.rules.hf.decoders",
    "estimator.rules.hf.decoders_pass",
    "estimator.rules.hf.bert",
    "estimator.rules.hf.bart",
    "estimator.rules.hf.t5",
    "estimator.rules.hf.vit",
    "estimator.rules.hf.autocast",
    "estimator.rules.hf.precision",
    "estimator.rules.features",
    "estimator.rules.finetune",  # issue 20
    "estimator.rules.reference.finetune",  # issue 20: the reference model's LoRA moment
    "estimator.rules.finetune_autocast",  # issue 20
    "estimator.rules.freeze",  # issue 20: finetune='freeze'
    "estimator.rules.hf.softmax_backward",
    "estimator.rules.hf.lora",  # issue 20
    "estimator.rules.hf.phi3",
    "estimator.rules.hf.qwen3",  # issue 22d
    "estimator.rules.hf.gpt_neox",  # issue 22d
    "estimator.rules.hf.gemma2",  # issue 22d
    "estimator.rules.hf.moe",  # issue 22
    "estimator.rules.hf.deepseek_v3",  # issue 22v
    "estimator.rules.hf.deepseek_v3_pass",  # issue 22s
    "estimator.rules.reference.moe",  # issue 22e
    "estimator.rules.reference.mla",  # issue 22l: the reference model's latent attention
    "estimator.rules.hf.checkpoint",  # issue 20c
)
_loaded = False
#: (kind, implementation, class, precision mode) -> rule, filled by ``rule``
_FOUND: dict[tuple[str, str, str | None, str | None], Callable[..., Any]] = {}


def register(kind: str, *implementations: str) -> Callable[[F], F]:
    """Decorator: ``fn`` is the rule of ``kind`` for each of ``implementations``."""

    def deco(fn: F) -> F:
        for impl in implementations:
            key = (kind, impl)
            if key in RULES and RULES[key] is not fn:
                raise ValueError(f"two rules for {kind!r} under {impl!r}")
            RULES[key] = fn
        _FOUND.clear()
        return fn

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in PROVIDERS:
            importlib.import_module(name)


def precision_mode(shapes: Any | None) -> str | None:
    """The second key of a run's rules: "autocast" under torch.autocast, else None.
    ``shapes``: estimator.shapes.Shapes (or anything with an ``autocast`` field)."""
    return "autocast" if shapes is not None and shapes.autocast else None


def rule(kind: str, spec: ModelSpec | str, shapes: Any | None = None) -> Callable[..., Any]:
    """The rule of ``kind`` for the spec's class (``hf_architecture``, where one class of an
    implementation differs from the others, e.g. "T5ForConditionalGeneration"), else for its
    implementation (or an implementation's name), else the reference rule; with ``shapes``
    (estimator.shapes.Shapes) in a precision mode, that mode's variant (``kind@mode``) first."""
    impl = spec if isinstance(spec, str) else spec.implementation
    cls = None if isinstance(spec, str) or impl == "reference" else spec.hf_architecture
    mode = precision_mode(shapes)
    key = (kind, impl, cls, mode)
    found = _FOUND.get(key)
    if found is None:
        _load()
        for name in ((f"{kind}@{mode}",) if mode is not None else ()) + (kind,):
            found = found or (cls and RULES.get((name, cls))) or RULES.get((name, impl))
            found = found or RULES.get((name, "reference"))
        if found is None:
            raise KeyError(f"no rule registered for {kind!r}")
        _FOUND[key] = found
    return found


def overrides(implementation: str) -> list[str]:
    """The kinds ``implementation`` does differently from the reference model (sorted)."""
    _load()
    return sorted(
        k for k, impl in RULES if impl == implementation and implementation != "reference"
    )
