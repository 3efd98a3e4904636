"""`tgauge validate MODEL --nproc N`: one training step on N ranks of torch.distributed (gloo
on CPU), measured per rank on the real engine (profiler/distributed), and compared with the
per-rank estimate where the estimator models the layout.

Rows carry the glossary's names (``params``, ``memory.weights``, ``memory.gradients``,
``memory.optimizer.<state>``, ``memory.activations.total``, ``peak_memory``) plus
``comm.<op>.count`` / ``comm.<op>.bytes``. Where ``estimator.estimate`` takes no
``parallel=`` the predicted side says so ("not modelled"): nothing is filled in.
torch is imported inside the functions.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from estimator.spec import ModelSpec, Workload
from estimator.spec.parallel import Parallel
from tgauge.comparison import make_row

RankVerdict = Literal["exact", "within", "off", "not modelled"]
NOT_MODELLED = "not modelled: estimator.estimate takes no parallel= on this version"


class RankRow(BaseModel):
    """One measured term of one rank, with the prediction of the same name if there is one."""

    rank: int
    term: str
    unit: Literal["params", "bytes", "count"]
    measured: int
    predicted: int | None
    rel_error: float | None = None
    verdict: RankVerdict
    note: str = ""


class ParallelPoint(BaseModel):
    model: str
    implementation: Literal["reference", "hf"]
    workload: dict[str, Any]
    parallel: dict[str, Any]
    peak_phase_measured: dict[int, str]
    #: per rank, the phase of the predicted peak (issue 18i)
    peak_phase_predicted: dict[int, str] = {}
    rows: list[RankRow]
    #: per rank, the comm terms per phase (forward, backward, optimizer_step)
    comm_by_phase: dict[int, dict[str, dict[str, int]]] = {}
    notes: list[str] = []


def parallel_of(nproc: int, zero: int | None, tp: int, sp: bool, wrap: str = "blocks") -> Parallel:
    """The layout the options name: ``--zero`` 1|2|3 (none: plain data parallelism),
    ``--wrap`` the FSDP2 units (blocks, torchtitan)."""
    shard = {None: "none", 0: "none", 1: "zero1", 2: "zero2", 3: "zero3"}[zero]
    return Parallel(world=nproc, tp=tp, sp=sp, shard=shard, wrap=wrap)


def _unit(term: str) -> str:
    if term == "params":
        return "params"
    return "count" if term.endswith(".count") else "bytes"


def predicted_terms(spec: ModelSpec, workload: Workload, parallel: Parallel) -> dict | None:
    """The estimate of the rank ``parallel.rank`` under the measured names (``params``: the
    elements of its own unpadded shards, like the measured local count); None where
    estimate() takes no ``parallel=``. ``peak_phase`` is the phase of the predicted peak."""
    from estimator import estimate
    from estimator.terms.ranks import local_params

    if "parallel" not in inspect.signature(estimate).parameters:
        return None
    est = estimate(spec, workload, parallel=parallel)
    mem = est.memory.terms
    terms = {
        "params": local_params(spec, parallel) if not parallel.single else est.params.total,
        "peak_phase": est.peak_phase,
        "memory.weights": mem.get("weights", 0),
        "memory.gradients": mem.get("gradients", 0),
        "memory.activations.total": sum(v for k, v in mem.items() if k.startswith("activations.")),
        "peak_memory": est.peak_memory_bytes,
    }
    states = {k: v for k, v in mem.items() if k.startswith("optimizer.")}
    terms |= {f"memory.{k}": v for k, v in states.items()}
    terms["memory.optimizer.total"] = sum(states.values())
    comm = getattr(est, "comm", None) or {}
    return terms | dict(getattr(comm, "terms", comm))


def rows_of(profiles: list[Any], predicted: dict[int, dict[str, Any]] | None) -> list[RankRow]:
    """Each rank's measured terms against ``predicted[rank]`` (that rank's own estimate)."""
    rows = []
    for prof in profiles:
        mine = None if predicted is None else predicted[prof.rank]
        for term, got in prof.terms().items():
            phase = ""
            if term == "peak_memory":
                phase = f"phase: {prof.live_peak.phase}"
                if mine is not None:
                    phase += f" (predicted {mine['peak_phase']})"
            if mine is None or term not in mine:
                note = NOT_MODELLED if mine is None else "not in the estimate"
                note = "; ".join(filter(None, [phase, note]))
                rows.append(
                    RankRow(
                        rank=prof.rank,
                        term=term,
                        unit=_unit(term),
                        measured=got,
                        predicted=None,
                        verdict="not modelled",
                        note=note,
                    )
                )
                continue
            row = make_row(term, "bytes", mine[term], got)
            rows.append(
                RankRow(
                    rank=prof.rank,
                    term=term,
                    unit=_unit(term),
                    measured=got,
                    predicted=mine[term],
                    rel_error=row.rel_error,
                    verdict=row.verdict if row.verdict != "not measured" else "off",
                    note=phase,
                )
            )
    return rows


def validate_parallel(
    spec: ModelSpec,
    workload: Workload,
    parallel: Parallel,
    *,
    hf_config: dict[str, Any] | None = None,
    timeout_s: float = 600.0,
    on_phase: Callable[[dict[int, str]], None] | None = None,
) -> ParallelPoint:
    """Run and measure ``parallel.world`` ranks; raises profiler.distributed.launch.RankFailure
    when a rank fails (its rank, how and its log's last lines)."""
    from profiler.distributed.launch import run_ranks
    from profiler.distributed.results import Job

    # every field stated (as tgauge/validate.py does): the ranks measure exactly the workload
    # predicted, never the model's usual settings that estimate() fills into unset fields
    # (resolved_defaults: a Hugging Face Llama's usual attention is sdpa, the Workload's eager)
    workload = Workload.model_validate(workload.model_copy(update={"device": "cpu"}).model_dump())
    if hf_config is None and spec.implementation != "reference":
        spec = spec.model_copy(update={"implementation": "reference"})  # what runs
    if workload.mode != "train":
        from estimator.spec import UnsupportedError

        raise UnsupportedError(f"--nproc measures training steps: mode={workload.mode!r}")
    with tempfile.TemporaryDirectory(prefix="tgauge-ranks-") as out_dir:
        builder = "tgauge.rank_targets:" + ("reference" if hf_config is None else "hugging_face")
        job = Job(
            builder=builder,
            spec=spec,
            workload=workload,
            parallel=parallel,
            hf_config=hf_config,
            out_dir=out_dir,
        )
        profiles = run_ranks(job, timeout_s=timeout_s, on_phase=on_phase)
    predicted: dict[int, dict[str, Any]] | None = {}
    for r in range(parallel.world):
        mine = predicted_terms(spec, workload, parallel.model_copy(update={"rank": r}))
        predicted = None if mine is None else {**(predicted or {}), r: mine}
    notes = sorted({n for p in profiles for n in p.notes})
    if predicted is None:
        notes.append(NOT_MODELLED)
    return ParallelPoint(
        model=spec.name,
        implementation="reference" if hf_config is None else "hf",
        workload=workload.model_dump(mode="json"),
        parallel=parallel.model_dump(mode="json"),
        peak_phase_measured={p.rank: p.live_peak.phase for p in profiles},
        peak_phase_predicted={r: t["peak_phase"] for r, t in (predicted or {}).items()},
        rows=rows_of(profiles, predicted),
        comm_by_phase={p.rank: p.comm_by_phase for p in profiles},
        notes=notes,
    )
