"""What the peak is made of at its moment: named parts that add up to the peak exactly.

The peak of a step (estimator/replay/peak.py) is the highest point of its timeline, not the
sum of its memory terms: activations are freed as backward moves on, and the optimizer step
adds temporaries that no term holds. ``peak_parts`` splits the peak into the terms live at
that moment (weights, master copy, optimizer states, buffers; at the optimizer step also the
gradients, the step's inputs and its temporaries) and one named remainder for what the
replay tracks tensor by tensor (activations, their gradients and the transients of the
moment; in inference, the KV cache as it grows). The parts always sum to the peak.
"""

from __future__ import annotations

from typing import Any

from estimator.replay.peak import _step_temporaries
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec
from estimator.terms.memory import input_bytes

Terms = dict[str, Any]

#: terms resident through the whole step (what a plan shards keeps its names)
_RESIDENT = ("weights", "buffers", "optimizer.", "sharding.")

#: the replayed remainder, named by the phase of the peak
REMAINDER = {
    "forward": "activations + logits at the forward peak (replayed, estimator/replay/)",
    "backward": "activations, their gradients and transients at the backward peak "
    "(replayed, estimator/replay/backward.py)",
    "prefill": "activations, KV cache and transients at the prefill peak "
    "(replayed, estimator/replay/inference.py)",
    "decode": "activations, KV cache and transients at the decode peak "
    "(replayed, estimator/replay/inference.py)",
}
STEP_TEMPORARIES = "optimizer step temporaries"
STEP_INPUTS = "inputs (token ids)"


def _resident(name: str, phase: str) -> bool:
    if name.startswith("gradients"):
        return phase == "optimizer_step"  # set to None before the forward (peak.py)
    return any(name == p or name.startswith(p) for p in _RESIDENT)


def peak_parts(
    spec: ModelSpec,
    sh: Shapes,
    terms: Terms,
    peak: int,
    phase: str,
    named: Terms | None = None,
) -> Terms:
    """{part: bytes} summing to ``peak``: the resident terms of ``terms`` (a plan's per-rank
    share or the estimate's own), then the optimizer step's inputs and temporaries or the
    replayed remainder of ``phase``; ``named``: a rank's labelled parts of the moment
    (Estimate.peak_parts, estimator/replay/rank_parts.py), the remainder then what they leave
    (activation gradients and transients)."""
    parts = {k: v for k, v in terms.items() if v and _resident(k, phase)}
    if named and phase != "optimizer_step":
        parts.update({k: v for k, v in named.items() if v})
        rest = peak - sum(parts.values())
        if rest:
            parts[f"other live bytes at the {phase} peak (activation gradients, transients)"] = rest
        return parts
    if phase == "optimizer_step":
        parts[STEP_INPUTS] = input_bytes(spec, sh)
        if temporaries := _step_temporaries(spec, sh, terms):
            label = f"{STEP_TEMPORARIES} ({sh.optimizer}, {sh.optimizer_impl})"
            parts[label] = temporaries
    rest = peak - sum(parts.values())
    if rest:
        parts[REMAINDER.get(phase, f"other live bytes at the {phase} peak")] = rest
    return parts
