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

#: labels of the bytes a per-rank replay names at its peak (issue 18: the peak table's rows)
ACTS = "activations (saved)"
GRADS = "gradients (unsharded, autograd's)"
SHARDED = "gradients (sharded: reduce-scatter outputs so far)"
GATHERED = "FSDP2 gathered parameters (unsharded units)"
FLAT = "FSDP2 all-gather outputs (flat: prefetched or kept)"
RS_INPUT = "FSDP2 reduce-scatter input"
LOGITS = "logits [n, V]"
D_LOGPROBS = "loss: d(log-probs) [n, V]"
D_LOGITS = "loss: d(logits) [n, V]"


class Live:
    """Running live bytes and their highest reading. ``named`` (integer sizes only): also
    track the bytes taken and dropped under a label (``take(..., label=)``), and
    ``at_peak``, the labelled bytes at the highest reading."""

    def __init__(self, start: Any, named: dict[str, int] | None = None) -> None:
        self.now = start
        self._peak = start
        self._pending = False  # symbolic: ``now`` is a reading not yet in ``_peak``
        self.named = None if named is None else dict(named)
        self.at_peak: dict[str, int] = dict(named or {})
        self._run: tuple[dict[str, int], dict[str, int]] = ({}, {})  # measure: top, delta

    def _label(self, label: str | None, n: Any) -> None:
        if label is not None and self.named is not None:
            self.named[label] = self.named.get(label, 0) + n

    @property
    def peak(self) -> Any:
        if self._pending:
            self._peak, self._pending = vmax(self._peak, self.now), False
        return self._peak

    @peak.setter
    def peak(self, value: Any) -> None:
        self._peak, self._pending = value, False

    def take(self, *nbytes: Any, label: str | None = None) -> Any:
        n = sum(nbytes)
        self.now += n
        self._label(label, n)
        if type(self.now) is int:
            if self.now > self._peak:
                self._peak = self.now
                if self.named is not None:
                    self.at_peak = dict(self.named)
        elif not _nonnegative(n):  # a reading the next one may not exceed: keep it now
            self._peak, self._pending = vmax(self._peak, self.now), False
        else:  # the next take (>= 0) reads at least as much: keep only the last of a row
            self._pending = True
        return n

    def drop(self, *nbytes: Any, label: str | None = None) -> None:
        if self._pending:
            self._peak, self._pending = vmax(self._peak, self.now), False
        self.now -= sum(nbytes)
        self._label(label, -sum(nbytes))

    def measure(self, run: Callable[[], object]) -> tuple[Any, Any]:
        """(highest reading above the current one, net change) while ``run`` runs; the
        overall peak keeps whichever reading is higher."""
        before, saved = self.now, self.peak
        saved_at, named_before = self.at_peak, dict(self.named or {})
        self.peak = before
        self.at_peak = dict(named_before)
        run()
        top, delta = self.peak - before, self.now - before
        if self.named is not None:  # the labelled bytes at the run's top, and their change
            keys = set(self.named) | set(self.at_peak)
            self._run = (
                {k: self.at_peak.get(k, 0) - named_before.get(k, 0) for k in keys},
                {k: self.named.get(k, 0) - named_before.get(k, 0) for k in keys},
            )
            if type(saved) is int and saved >= self.peak:
                self.at_peak = saved_at
        self.peak = vmax(saved, self.peak)
        return top, delta

    def repeat(self, m: int, top: Any, delta: Any) -> None:
        """``m`` more runs of what ``measure`` saw (highest reading ``top`` above its start,
        net change ``delta``), e.g. the layers of a stack after the ones replayed: each starts
        where the last ended, so the highest reading is that of the last (delta > 0) or the
        first (delta <= 0) of them."""
        if m > 0:
            before = self.peak
            runs = m - 1 if type(delta) is not int or delta > 0 else 0
            self.peak = vmax(self.peak, self.now + vmax(0, (m - 1) * delta) + top)
            if self.named is not None:
                tops, deltas = self._run
                if self.peak != before:  # the last (or first) repeated run's top
                    self.at_peak = {
                        k: self.named.get(k, 0) + runs * deltas.get(k, 0) + tops.get(k, 0)
                        for k in set(self.named) | set(tops)
                    }
                for k, v in deltas.items():
                    self.named[k] = self.named.get(k, 0) + m * v
            self.now += m * delta


def _nonnegative(n: Any) -> bool:
    """Whether a symbolic amount is >= 0 at every point."""
    from estimator.symbolic import provably_ge

    return provably_ge(n, 0)
