"""What one rank's training peak is made of (issue 18): the labelled parts of the moment that
``estimator.replay.peak.train_peak`` found highest, so that a peak table names the gathered
FSDP2 units, the unsharded and sharded gradients, the reduce-scatter buffer, the logits and
the loss's [n, V] gradients instead of one replayed remainder.

Forward: the candidates of ``train_peak`` (at the loss; inside the last attention; at the last
layer's, the head's and the embedding's unshard), each with its labelled parts; the one equal
to the peak is named. Backward: the walk of estimator/replay/backward.py again, its start
labelled (saved activations, gathered units), read at its peak (``Live.at_peak``). A peak
that no labelled candidate reproduces exactly is not named (None): the table then keeps its
one remainder row, never a guess.
"""

from __future__ import annotations

from typing import Any

from estimator.replay.backward import backward_walk
from estimator.replay.forward import attention_moment
from estimator.rules.live import ACTS, D_LOGITS, D_LOGPROBS, GATHERED, LOGITS
from estimator.rules.registry import rule
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec
from estimator.terms.memory import group

Terms = dict[str, Any]
ATTENTION = "activations and the last layer's attention transients"
LOSS = "loss: its own tensors beside the logits (HF: their fp32 copy, the shifted labels)"
HELD = "held by the forward, saved by nothing (HF: its cache)"


def rank_peak_parts(
    spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any, peak: int, phase: str
) -> dict[str, int] | None:
    """{label: bytes} live at the rank's ``peak`` of ``phase`` beyond the resident terms
    (weights, optimizer states: estimator/replay/composition.py lists those); None where
    not named (the optimizer step, autocast, tensor-parallel logits, symbolic sizes)."""
    if type(peak) is not int or sh.autocast or sh.finetune.lora or rank[4][1]:
        return None
    if phase == "forward":
        return _forward(spec, sh, terms, rank, peak)
    if phase == "backward":
        return _backward(spec, sh, terms, rank, peak)
    return None


def _forward(spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any, peak: int) -> Any:
    from estimator.replay.peak import (
        _activation_terms,
        _head_terms,
        _last_layer_and_head,
        _logits_bytes,
    )

    gathers = rank[1]
    acts = group(terms, "activations")
    logits = _logits_bytes(spec, sh, sh.b * sh.s_out)
    moment = attention_moment(spec, sh, _activation_terms(terms))
    candidates = [{ACTS: acts, LOGITS: logits}, {ATTENTION: moment}]
    if gathers is not None:
        candidates[0][GATHERED] = gathers.forward_extra()
        candidates[1][GATHERED] = gathers.moment_extra()
        before = acts - _last_layer_and_head(spec, sh, terms)
        candidates.append({ACTS: before, GATHERED: gathers.unshard_extra()})
        if (head := gathers.head_unshard_extra()) is not None:
            candidates.append({ACTS: acts - _head_terms(spec, terms), GATHERED: head})
            candidates.append({GATHERED: gathers.embed_unshard_extra()})
    return _matching(spec, sh, terms, rank, peak, candidates)


def _backward(spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any, peak: int) -> Any:
    from estimator.replay.peak import _activation_terms, _logits_bytes

    grads, gathers = rank[:2]
    acts = group(terms, "activations")
    extra = gathers.backward_extra() if gathers is not None else 0
    named = {ACTS: acts, GATHERED: extra}
    start = _base(spec, sh, terms, rank) + acts + extra
    if gathers is not None:  # a fresh walk: the replay's FSDP2 state starts anew
        gathers = type(gathers).__new__(type(gathers))
        gathers.__dict__.update(rank[1].__dict__, rs_input=0, first=False)
    live = backward_walk(spec, sh, _activation_terms(terms), grads, start, gathers, named)
    if live.peak == peak:
        return _with_rest(spec, sh, terms, rank, peak, live.at_peak)
    logits = _logits_bytes(spec, sh, sh.b * sh.s_out)
    if start + 2 * logits == peak:  # the loss's two [n, V] gradients at the start
        return _with_rest(
            spec, sh, terms, rank, peak, named | {D_LOGPROBS: logits, D_LOGITS: logits}
        )
    return None


def _base(spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any) -> int:
    """Live through the step besides activations and gathers: weights, optimizer states,
    inputs (less the ids the embeddings saved: one storage), the engine's buffers."""
    from estimator.replay.peak import _saved_inputs
    from estimator.terms.memory import input_bytes

    states = group(terms, "weights") + group(terms, "optimizer") + input_bytes(spec, sh)
    return states + rank[2] - _saved_inputs(spec, sh, terms)


def _matching(
    spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any, peak: int, candidates: list
) -> Any:
    """The first candidate whose bytes (with the base and what the forward holds) are the
    peak, labelled; None if none is."""
    held = rule("train.held", spec)(spec, sh)
    candidates[0][LOSS] = rule("live.loss_moment", spec, sh)(spec, sh)
    base = _base(spec, sh, terms, rank)
    for named in candidates:
        if base + held + sum(named.values()) == peak:
            return _with_rest(spec, sh, terms, rank, peak, named | {HELD: held})
    return None


def _with_rest(
    spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any, peak: int, named: dict[str, int]
) -> dict[str, int]:
    """``named`` (non-zero parts), with the step's inputs and the engine's buffers named."""
    from estimator.replay.peak import _saved_inputs
    from estimator.terms.memory import input_bytes

    out = {k: v for k, v in named.items() if v}
    inputs = input_bytes(spec, sh) - _saved_inputs(spec, sh, terms)
    if inputs:
        out["inputs (token ids, beyond the embedding's saved ids)"] = inputs
    if rank[2]:
        out["DDP gradient buckets"] = rank[2]
    return out
