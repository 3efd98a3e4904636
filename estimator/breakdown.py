"""Result types: a Breakdown of named leaf terms, and the Estimate that gathers them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    computed_field,
)

from estimator.spec.model import ModelSpec
from estimator.spec.parallel import Parallel
from estimator.spec.workload import Workload
from estimator.sym import StepSeries

Unit = Literal["params", "bytes", "flops"]
PeakPhase = Literal["forward", "forward_end", "backward", "optimizer_step", "prefill", "decode"]


class Breakdown(BaseModel):
    """Named leaf terms of one quantity, exact integers; the total is derived, never stored.

    Term names are module paths of the reference model with the layer index removed
    (``decoder.layers.self_attn.q_proj``), optionally prefixed by a category
    (``forward.``, ``backward.``, ``activations.``); see docs/glossary.md.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: Unit
    terms: dict[str, int]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return sum(self.terms.values())

    def group(self, prefix: str) -> int:
        """Sum of the terms named ``prefix`` or starting with ``prefix + '.'``."""
        return sum(v for k, v in self.terms.items() if k == prefix or k.startswith(prefix + "."))

    def subset(self, prefix: str) -> Breakdown:
        """The terms under ``prefix``, with the prefix stripped."""
        cut = len(prefix) + 1
        return Breakdown(
            unit=self.unit,
            terms={k[cut:]: v for k, v in self.terms.items() if k.startswith(prefix + ".")},
        )


def _steps(value: Any) -> list[int] | StepSeries:
    """A per-step list as given, or a StepSeries kept lazy (its values are computed when
    read: a compiled decode estimate costs the same at any number of steps)."""
    if isinstance(value, StepSeries):
        return value
    return _INT_LIST.validate_python(value)


_INT_LIST: TypeAdapter[list[int]] = TypeAdapter(list[int])
#: N ints, one per decode step: a list, or a StepSeries (estimator/sym.py) that reads as one
StepList = Annotated[
    Any,
    PlainValidator(_steps, json_schema_input_type=list[int]),
    PlainSerializer(list, return_type=list[int]),
]


class DecodeFlops(BaseModel):
    """FLOPs of incremental decoding: prefill P tokens, then N one-token steps.

    ``per_step_flops[t - 1]`` is step t with a KV cache (one query against the P + t cached
    positions, capped by the pattern); without a cache step t re-runs the full P + t prefix.
    Both totals include the prefill (and the encoder of an encoder-decoder model).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefill_flops: int
    per_step_flops: StepList
    per_step_flops_without_cache: StepList
    total_with_cache_flops: int
    total_without_cache_flops: int


class TextbookTerm(BaseModel):
    """One quantity as the seed notes' closed form gives it, beside tgauge's exact count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    formula: str
    textbook: int
    exact: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float:
        """exact / textbook (inf when the textbook value is 0)."""
        return self.exact / self.textbook if self.textbook else float("inf")


class Textbook(BaseModel):
    """The seed notes' formulas (params, per-layer cache) against the exact model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    terms: list[TextbookTerm]


class Estimate(BaseModel):
    """Everything the estimator predicts for one (spec, workload); JSON via model_dump_json.

    ``unchecked`` names the predictions that no measurement of tgauge checks, so a reader
    knows which numbers are modelled only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: ModelSpec
    workload: Workload
    params: Breakdown
    memory: Breakdown
    flops: Breakdown
    kv_cache: Breakdown
    peak_memory_bytes: int
    peak_phase: PeakPhase
    decode: DecodeFlops | None
    textbook: Textbook
    unchecked: list[str]
    # issue 23
    defaults_applied: dict[str, Any] = Field(
        default_factory=dict,
        description="the workload fields left unset that the model's usual settings filled "
        "(spec.usual, with its source); the workload above already holds them",
    )
    # issue 18: one rank of a parallel step (estimator.spec.parallel.Parallel); None: one
    # device. comm: that rank's collectives per training step, ``comm.<op>.count`` and
    # ``comm.<op>.bytes`` (estimator/terms/comm.py states the bytes convention)
    parallel: Parallel | None = None
    comm: dict[str, int] = {}
    # issue 18 (wrapping): a rank's peak beyond its resident terms, by label (gathered FSDP2
    # units, gradients, the loss's [n, V] gradients, ...: estimator/replay/rank_parts.py);
    # None where not named
    peak_parts: dict[str, int] | None = None
