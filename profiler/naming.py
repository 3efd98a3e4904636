"""Module paths -> glossary term names (docs/glossary.md): the one place the rule lives."""

from __future__ import annotations

#: term of the root module's own parameters / ops (a path of "")
ROOT_TERM = "(root)"
#: term of work done outside every module of the model (a loss_fn, the optimizer, ...)
OUTSIDE_TERM = "(outside)"


def term_name(path: str) -> str:
    """Drop purely numeric components: ``decoder.layers.3.ffn.up`` -> ``decoder.layers.ffn.up``.

    The root module (path ``""``) is named ``(root)``.
    """
    kept = [part for part in path.split(".") if part and not part.isdigit()]
    return ".".join(kept) if kept else ROOT_TERM


def add_term(terms: dict[str, int], name: str, value: int) -> None:
    """Sum ``value`` into ``terms[name]`` (per-layer terms are summed over layers)."""
    terms[name] = terms.get(name, 0) + value
