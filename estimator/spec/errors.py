"""The two errors every part of tgauge raises for input it cannot use."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec or workload that cannot be built; the message names field, value and options."""


class UnsupportedError(SpecError):
    """A valid request that tgauge does not model (yet); says what is missing."""
