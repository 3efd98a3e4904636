"""The estimate compiled once per structure, then evaluated per point.

What an estimate does depends on its structure (the spec and every workload field but the
sizes: mode, precision, attention, checkpointing, optimizer, ...), and each number it returns
is a polynomial in the sizes b, s, target_len, prompt_len and new_tokens, within the region
where the code's decisions on sizes come out the same. ``program(build, spec, workload)`` is
the structure's program: ``trace`` runs ``build`` (e.g. estimator.estimate.raw_estimate) once
with symbolic sizes (estimator/symbolic/), recording those decisions as guards, and
``source.Trace`` writes one Python function that checks the guards and computes every output
at a point (and a numpy one for grids). A point outside every trace so far is traced anew, up
to ``MAX_TRACES`` per structure, once ``TRACE_AFTER_S`` went into computing the structure's
points directly (a search, a long decode and a sweep compile; a one-off estimate does not);
beyond that, or when a structure cannot be traced, the caller runs ``build`` directly. Decode's
N steps are summed in closed form (estimator/sums.py) and their per-step values come as a lazy
StepSeries, so the cost does not depend on N.

Every output equals the direct computation at every point whose guards hold: the trace runs
the same code and takes the same branches (tests/estimator/test_compiled.py compares both on
random grids; docs/architecture.md).
"""

from __future__ import annotations

from estimator.compiled.program import (
    MAX_TRACES,
    TRACE_AFTER_S,
    Program,
    evaluate,
    program,
    structure,
    trace,
    variables,
)
from estimator.compiled.source import Trace

__all__ = [
    "MAX_TRACES",
    "TRACE_AFTER_S",
    "Program",
    "Trace",
    "evaluate",
    "program",
    "structure",
    "trace",
    "variables",
]
