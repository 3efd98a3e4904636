"""Phi-3's rules (transformers modeling_phi3, issue 22), registered for the class
Phi3ForCausalLM where its code differs from Llama's; everything else is the Llama rules
(estimator/rules/hf/decoders.py). Measured in tests/tgauge/test_hf_rules_families.py."""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec


@register("saved.ffn.gated", "Phi3ForCausalLM")
def gated_ffn_saved(spec: ModelSpec, sh: Shapes, n: Any) -> dict[str, Any]:
    """Phi3MLP.forward: ``gate, up_states = gate_up_proj(x).chunk(2, dim=-1)``; the
    activation saves ``gate``, a view of the whole [n, 2 d_ff] output (its storage counted
    there), and ``up_states * act(gate)`` saves the same storage again (a view) and the
    activation's output [n, d_ff]."""
    inner = n * spec.d_ff * sh.ib
    return {"ffn.act": 2 * inner, "ffn": inner}
