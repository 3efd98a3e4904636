"""Transformer vs recurrent models side by side (the study notes' ELMo / GPT / BERT
comparison): parameters, training FLOPs and memory, the state inference carries, the
sequential depth and a roofline time that respects the recurrence.

A Transformer layer is one parallel chain of matmuls over all T positions; an RNN layer runs
T dependent steps, each a small matmul with h_{t-1} that reads the recurrent weights again.
Their roofline times:

- Transformer: ``step_times`` of its training estimate (one roofline over the whole step);
- recurrent: the parallel parts (char CNN, the input projections of every layer, the head) as
  one roofline over all tokens; then per layer and direction T rooflines of one step
  (FLOPs 2 b (g H h_out + H P), bytes: W_hh and W_hr read, the state read and written);
  training = 3 x that forward (backward runs the same dependent chain twice over: the input
  and the weight gradients). Directions and layers run one after another, as torch does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from estimator.breakdown import Breakdown
from estimator.plan.hardware import GPU, roofline
from estimator.replay.recurrent_step import RecurrentPeak, recurrent_train_peak
from estimator.spec.errors import SpecError
from estimator.spec.recurrent import RECURRENT_PRESETS, RecurrentSpec
from estimator.terms.recurrent import (
    UNCHECKED,
    _cell_params,
    recurrent_forward_flops,
    recurrent_params,
    recurrent_saved_bytes,
    recurrent_state_bytes,
    sequential_steps,
)

#: the comparison the study notes make (ELMo 93.6M, GPT 117M, BERT-base 110M)
DEFAULT_MODELS = ("elmo", "gpt2-small", "bert-base")
_ADAMW_STATES = 2  # exp_avg, exp_avg_sq: fp32, one each per parameter


class CompareRow(BaseModel):
    """One model at one sequence length (training step of ``batch`` sequences, fp32, AdamW)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: Literal["transformer", "recurrent"]
    seq_len: int
    batch: int
    params: int
    train_flops: int
    weights_bytes: int
    activations_bytes: int
    train_memory_bytes: int
    #: the estimated peak (estimator/replay/recurrent_step.py for an LSTM LM); a recurrent
    #: model whose peak is not modelled: the sum of terms (weights + gradients + AdamW states
    #: + saved activations)
    train_memory_kind: Literal["peak", "sum of terms"]
    #: issue 25: the phase of the peak (None for a sum of terms), and for a recurrent model
    #: what is live at it (bytes per part, estimator/replay/recurrent_step.py)
    peak_phase: str | None = None
    peak_parts: dict[str, int] | None = None
    state_bytes: int
    state_kind: Literal["kv cache", "recurrent state"]
    sequential_per_layer: int
    sequential_steps: int
    step_time_s: float
    bound: str


def _transformer_row(name: str, seq_len: int, batch: int, gpu: GPU) -> CompareRow:
    from estimator.estimate import estimate
    from estimator.plan.hardware import step_times
    from estimator.spec.presets import get_preset
    from estimator.spec.workload import Workload

    spec = get_preset(name)
    est = estimate(spec, Workload(mode="train", batch_size=batch, seq_len=seq_len))
    terms = est.memory.terms
    acts = sum(v for k, v in terms.items() if k.startswith("activations."))
    times = step_times(est, gpu)
    layers = spec.n_encoder_layers + spec.n_decoder_layers
    kv = estimate(spec, Workload(mode="prefill", batch_size=batch, seq_len=seq_len)).kv_cache
    return CompareRow(
        name=name,
        family="transformer",
        seq_len=seq_len,
        batch=batch,
        params=est.params.total,
        train_flops=est.flops.total,
        weights_bytes=terms.get("weights", 0),
        activations_bytes=acts,
        train_memory_bytes=est.peak_memory_bytes,
        train_memory_kind="peak",
        peak_phase=est.peak_phase,
        state_bytes=kv.total,
        state_kind="kv cache",
        sequential_per_layer=1,
        sequential_steps=layers,
        step_time_s=times.step.time_s,
        bound=times.step.bound,
    )


def recurrent_step_time(
    spec: RecurrentSpec, batch: int, seq_len: int, gpu: GPU, dtype_bytes: int = 4
) -> tuple[float, str]:
    """Roofline seconds of one training step and the bound of its dependent steps."""
    flops = recurrent_forward_flops(spec, batch, seq_len)
    weights = recurrent_params(spec).total * dtype_bytes
    serial: list[tuple[int, int]] = []  # (flops, bytes) of one dependent step
    serial_flops = 0
    # one cell's h (and c): read and written by each of its steps
    state = recurrent_state_bytes(spec, batch, dtype_bytes) // (spec.n_layers * spec.directions)
    for layer in range(spec.n_layers):
        cell = _cell_params(spec, layer)
        w_step = cell["weight_hh"] + cell.get("weight_hr", 0)
        step_flops = 2 * batch * w_step
        serial.append((step_flops, w_step * dtype_bytes + 2 * state))
        serial_flops += step_flops * seq_len * spec.directions * spec.stacks
    parallel_flops = flops.total - serial_flops  # the input projections, char CNN, head
    acts = recurrent_saved_bytes(spec, batch, seq_len, dtype_bytes).total
    parallel = roofline(parallel_flops, weights + 2 * acts, gpu, "fp32")
    t = parallel.time_s
    bounds = []
    for step_flops, step_bytes in serial:
        one = roofline(step_flops, step_bytes, gpu, "fp32")
        t += one.time_s * seq_len * spec.directions * spec.stacks
        bounds.append(one.bound)
    return 3 * t, "memory" if "memory" in bounds else "compute"


def _recurrent_row(spec: RecurrentSpec, seq_len: int, batch: int, gpu: GPU) -> CompareRow:
    n = recurrent_params(spec).total
    weights = 4 * n
    acts = recurrent_saved_bytes(spec, batch, seq_len).total
    time_s, bound = recurrent_step_time(spec, batch, seq_len, gpu)
    steps = sequential_steps(spec, seq_len)
    try:
        peak = recurrent_train_peak(spec, batch, seq_len)
        memory, kind = peak.peak_bytes, "peak"
    except SpecError:
        memory, kind = weights * (2 + _ADAMW_STATES) + acts, "sum of terms"
    return CompareRow(
        name=spec.name,
        family="recurrent",
        seq_len=seq_len,
        batch=batch,
        params=n,
        train_flops=3 * recurrent_forward_flops(spec, batch, seq_len).total,
        weights_bytes=weights,
        activations_bytes=acts,
        train_memory_bytes=memory,
        train_memory_kind=kind,
        peak_phase=peak.phase if kind == "peak" else None,
        peak_parts=peak.parts if kind == "peak" else None,
        state_bytes=recurrent_state_bytes(spec, batch, 4),
        state_kind="recurrent state",
        sequential_per_layer=steps["per_layer"],
        sequential_steps=steps["stack"],
        step_time_s=time_s,
        bound=bound,
    )


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: list[CompareRow]
    #: (model, seq_len, why) for the points a model cannot run (a Transformer past its
    #: learned positions)
    skipped: list[tuple[str, int, str]]


def compare(names: list[str], seq_lens: list[int], batch: int, gpu: GPU) -> Comparison:
    """One row per model and sequence length; a name is a recurrent preset or a Transformer
    preset (SpecError naming both lists otherwise)."""
    from estimator.spec.presets import PRESETS
    from estimator.spec.workload import Workload, context_limit

    rows, skipped = [], []
    for name in names:
        key = name.lower()
        if key not in RECURRENT_PRESETS and key not in PRESETS:
            raise SpecError(
                f"model={name!r} is neither a recurrent preset ({', '.join(RECURRENT_PRESETS)}) "
                f"nor a Transformer preset ({', '.join(PRESETS)})"
            )
        for s in seq_lens:
            if key in RECURRENT_PRESETS:
                rows.append(_recurrent_row(RECURRENT_PRESETS[key], s, batch, gpu))
                continue
            limit = context_limit(PRESETS[key], Workload(mode="train", seq_len=s))
            if limit is not None and s > limit:
                skipped.append((key, s, f"past its context of {limit} tokens"))
                continue
            rows.append(_transformer_row(key, s, batch, gpu))
    return Comparison(rows=rows, skipped=skipped)


class RecurrentEstimate(BaseModel):
    """What ``tgauge estimate`` says of a recurrent model: one training step of ``batch``
    sequences of ``seq_len`` tokens (AdamW: two states per parameter), in ``dtype_bytes``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: RecurrentSpec
    batch: int
    seq_len: int
    dtype_bytes: int
    params: Breakdown
    forward_flops: Breakdown
    train_flops: int
    memory: Breakdown
    state_bytes: int
    sequential_per_layer: int
    sequential_steps: int
    unchecked: list[str]
    # issue 25: the step's peak (LSTM language models; None with ``peak_refused`` otherwise)
    peak: RecurrentPeak | None = None
    peak_refused: str | None = None


def recurrent_estimate(
    spec: RecurrentSpec, batch: int, seq_len: int, dtype_bytes: int = 4, optimizer: str = "adamw"
) -> RecurrentEstimate:
    """Parameters, FLOPs, the memory terms of a training step, the carried state and the
    sequential depth of ``spec``. ``optimizer``: adamw / adam (2 states), sgd-momentum (1),
    sgd or none (0); others are refused by name."""
    states = {
        "adamw": ("exp_avg", "exp_avg_sq"),
        "adam": ("exp_avg", "exp_avg_sq"),
        "sgd-momentum": ("momentum_buffer",),
        "sgd": (),
        "none": (),
    }
    if optimizer not in states:
        raise SpecError(
            f"optimizer={optimizer!r} is not modelled for recurrent models; use one of "
            f"{', '.join(states)}"
        )
    params = recurrent_params(spec)
    weights = params.total * dtype_bytes
    memory = {"weights": weights}
    if optimizer != "none":
        memory["gradients"] = weights
    for name in states[optimizer]:
        memory[f"optimizer.{name}"] = weights  # torch keeps each state like its parameter
    saved = recurrent_saved_bytes(spec, batch, seq_len, dtype_bytes)
    memory.update({f"activations.{k}": v for k, v in saved.terms.items()})
    fwd = recurrent_forward_flops(spec, batch, seq_len)
    steps = sequential_steps(spec, seq_len)
    peak, refused = None, None
    try:
        peak = recurrent_train_peak(spec, batch, seq_len, dtype_bytes, optimizer)
    except SpecError as exc:
        refused = str(exc)
    return RecurrentEstimate(
        spec=spec,
        batch=batch,
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        params=params,
        forward_flops=fwd,
        train_flops=3 * fwd.total,
        memory=Breakdown(unit="bytes", terms=memory),
        state_bytes=recurrent_state_bytes(spec, batch, dtype_bytes),
        sequential_per_layer=steps["per_layer"],
        sequential_steps=steps["stack"],
        unchecked=[
            *(
                [
                    "the peak is the highest of chosen moments (estimator/replay/"
                    "recurrent_step.py); the moments between them (later steps of the recurrent "
                    "backward, the convolutions' backward) are checked against the tracker "
                    "only at the tested points"
                ]
                if peak is not None
                else [f"the training step's peak: {refused}"]
            ),
            *UNCHECKED,
        ],
        peak=peak,
        peak_refused=refused,
    )
