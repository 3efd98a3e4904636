"""Typed results of a multi-rank run: one ``RankProfile`` per rank, and the job they ran."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from estimator.breakdown import Breakdown
from estimator.spec import ModelSpec, Workload
from estimator.spec.parallel import Parallel
from profiler.results import LivePeak


@dataclass
class Built:
    """What a rank's builder returns: the model (not yet wrapped), its forward inputs, the loss
    of its output, and the optimizer of the wrapped model's parameters."""

    model: Any
    inputs: Any
    loss_fn: Callable[[Any], Any]
    make_optimizer: Callable[[Any], Any]


class Job(BaseModel):
    """What every rank runs: ``builder`` ("module:function", called as ``function(job,
    dp_rank)`` -> ``Built``) makes the model of ``spec`` (or of ``hf_config``) for the
    workload; the layout; where the rank writes."""

    model_config = ConfigDict(frozen=True)

    builder: str
    spec: ModelSpec
    workload: Workload
    parallel: Parallel
    hf_config: dict[str, Any] | None = None
    out_dir: str
    seed: int = 0


class RankProfile(BaseModel):
    """One rank's training step: what it holds, saves, peaks at, and communicates.

    ``comm`` terms: ``comm.<op>.count`` / ``comm.<op>.bytes`` per op type (the byte
    convention of profiler/distributed/comm.py), over the measured step (forward, backward,
    optimizer step); ``comm_by_phase``: the same terms per phase (``forward``, ``backward``,
    ``optimizer_step``)."""

    rank: int
    world: int
    n_params: int
    weights: Breakdown
    gradients: Breakdown
    optimizer: Breakdown
    activations: Breakdown
    live_peak: LivePeak
    comm: dict[str, int]
    comm_by_phase: dict[str, dict[str, int]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def terms(self) -> dict[str, int]:
        """The glossary's names: ``params``, ``memory.weights``, ``memory.gradients``,
        ``memory.optimizer.<state>``, ``memory.activations`` (and ``.<module>``),
        ``peak_memory``, then ``comm.<op>.count`` / ``.bytes``."""
        terms = {
            "params": self.n_params,
            "memory.weights": self.weights.total,
            "memory.gradients": self.gradients.total,
        }
        terms |= {f"memory.optimizer.{k}": v for k, v in sorted(self.optimizer.terms.items())}
        terms["memory.optimizer.total"] = self.optimizer.total
        terms["memory.activations.total"] = self.activations.total
        terms["peak_memory"] = self.live_peak.peak_bytes
        return terms | self.comm
