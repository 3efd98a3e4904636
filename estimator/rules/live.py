"""The live-bytes tracker that every replay (forward, backward, inference passes) acts on.

Convention (profiler/live.py measures the same way): a tensor counts from the moment the op
that returns it has run; ``take`` allocates what one op returns and reads the peak, ``drop``
frees what Python or autograd releases. Views allocate nothing. Sizes may be symbolic
(estimator/sym.py): the peak is then an expression over the readings, and a reading that a
later take provably exceeds (takes of sizes >= 0 in a row) is not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from estimator.sym import vmax


class Live:
    """Running live bytes and their highest reading."""

    def __init__(self, start: Any) -> None:
        self.now = start
        self._peak = start
        self._pending = False  # symbolic: ``now`` is a reading not yet in ``_peak``

    @property
    def peak(self) -> Any:
        if self._pending:
            self._peak, self._pending = vmax(self._peak, self.now), False
        return self._peak

    @peak.setter
    def peak(self, value: Any) -> None:
        self._peak, self._pending = value, False

    def take(self, *nbytes: Any) -> Any:
        n = sum(nbytes)
        self.now += n
        if type(self.now) is int:
            if self.now > self._peak:
                self._peak = self.now
        elif not _nonnegative(n):  # a reading the next one may not exceed: keep it now
            self._peak, self._pending = vmax(self._peak, self.now), False
        else:  # the next take (>= 0) reads at least as much: keep only the last of a row
            self._pending = True
        return n

    def drop(self, *nbytes: Any) -> None:
        if self._pending:
            self._peak, self._pending = vmax(self._peak, self.now), False
        self.now -= sum(nbytes)

    def measure(self, run: Callable[[], object]) -> tuple[Any, Any]:
        """(highest reading above the current one, net change) while ``run`` runs; the
        overall peak keeps whichever reading is higher."""
        before, saved = self.now, self.peak
        self.peak = before
        run()
        top, delta = self.peak - before, self.now - before
        self.peak = vmax(saved, self.peak)
        return top, delta

    def repeat(self, m: int, top: Any, delta: Any) -> None:
        """``m`` more runs of what ``measure`` saw (highest reading ``top`` above its start,
        net change ``delta``), e.g. the layers of a stack after the ones replayed: each starts
        where the last ended, so the highest reading is that of the last (delta > 0) or the
        first (delta <= 0) of them."""
        if m > 0:
            self.peak = vmax(self.peak, self.now + vmax(0, (m - 1) * delta) + top)
            self.now += m * delta


def _nonnegative(n: Any) -> bool:
    """Whether a symbolic amount is >= 0 at every point."""
    from estimator.symbolic import provably_ge

    return provably_ge(n, 0)
