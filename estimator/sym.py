"""Sizes as numbers or as symbols: the few operations whose symbolic form is not Python's.

The estimator's term functions, rules and replays compute with plain ints. estimator/compiled/
runs them once more with symbolic sizes (``Sym``: a value at the traced point and a polynomial
of the sizes) to get each term as an expression it can evaluate at any point. Python's own
``max``, ``min`` and ``-(-x // c)`` would compare or divide the symbols and tie the expression to
the traced point; the helpers below keep the expression general instead. With ints they are
the builtins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any


def vmax(*xs: Any) -> Any:
    """max(xs): for ints the builtin; with a symbol, an expression of every argument."""
    if all(type(x) is int for x in xs):
        return max(xs)
    from estimator.symbolic import sym_max

    return sym_max(xs)


def vmin(*xs: Any) -> Any:
    """min(xs): for ints the builtin; with a symbol, an expression of every argument."""
    if all(type(x) is int for x in xs):
        return min(xs)
    from estimator.symbolic import sym_min

    return sym_min(xs)


def vpick(pairs: Sequence[tuple[Any, str]]) -> tuple[Any, Any]:
    """(the largest value, its label): the first pair whose value is the maximum, as
    ``max(pairs, key=value)``; with a symbol, the label is chosen at each point."""
    if all(type(v) is int for v, _ in pairs):
        return max(pairs, key=lambda p: p[0])
    from estimator.symbolic import sym_pick

    return sym_pick(pairs)


def ceil_div(x: Any, c: int) -> Any:
    """ceil(x / c) for a positive int c: -(-x // c)."""
    return -(-x // c)


class StepSeries(Sequence[int]):
    """The per-step values a + b t + c pairs(prompt + t) of decode steps t = 1..n, computed
    when read (a list of n ints on demand): what a compiled decode estimate returns instead of
    walking every step (estimator/compiled/). Equal to the list it stands for."""

    __slots__ = ("a", "b", "c", "prompt", "n", "pairs", "_list")

    def __init__(
        self, a: int, b: int, c: int, prompt: int, n: int, pairs: Callable[[int], int]
    ) -> None:
        self.a, self.b, self.c, self.prompt, self.n, self.pairs = a, b, c, prompt, n, pairs
        self._list: list[int] | None = None

    def __len__(self) -> int:
        return self.n

    def _at(self, t: int) -> int:
        return self.a + self.b * t + self.c * self.pairs(self.prompt + t)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.tolist()[i]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self._list[i] if self._list is not None else self._at(i + 1)

    def tolist(self) -> list[int]:
        if self._list is None:
            self._list = [self._at(t) for t in range(1, self.n + 1)]
        return self._list

    def __iter__(self) -> Iterator[int]:
        return iter(self.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepSeries | list):
            return self.tolist() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"StepSeries(n={self.n}, first={self[0] if self.n else None})"
