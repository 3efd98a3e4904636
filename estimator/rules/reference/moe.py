"""The reference model's mixture of experts (reference_model/moe.py, issue 22e): what its
router, experts and shared FFN save (rule ``saved.ffn.moe``), their backward (``backward.moe``)
and no-grad forward (``MoEPass``), and what the reference rules refuse of MoE.

Routing assumption (Workload.routing): the tokens each expert gets. What the experts save adds
up to k n tokens for any routing (each expert's tensors are sized by its own n_e, sum k n);
what is live at a moment depends on the n_e: 'uniform' (default) spreads the k n (token,
expert) pairs evenly, pair p = t k + j on expert p mod E, so expert e gets (k n + E - 1 - e)
// E; 'worst' puts every token on experts 0..k-1 (n each, the others none), the largest batch
an expert can get. tgauge validate forces the reference model's routers to the assumed routing
(reference_model/moe.py force_routing), so each measured point has the routing its estimate
assumed.

Sizes: n = b s tokens, d, E experts, k per token, d_e an expert's d_ff, n_e the tokens of
expert e; matmul outputs in ``sh.ib``, the rest in ``sh.cb``; int64 indices.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

Terms = dict[str, Any]
#: MoE fields the reference model does not build (reference_model/moe.py UNBUILT)
UNBUILT = {
    "router_fp32": False,
    "router_groups": None,
    "router_topk_groups": None,
    "shared_expert_gate": False,
}


def expert_counts(spec: ModelSpec, sh: Shapes, n: Any) -> list[Any]:
    """Tokens each expert gets out of n under the routing assumption (module docstring)."""
    E, k = spec.n_experts, spec.n_experts_per_token
    if sh.routing == "worst":
        return [n if e < k else 0 for e in range(E)]
    return [(k * n + E - 1 - e) // E for e in range(E)]


def ffn_saved(spec: ModelSpec, sh: Shapes, n: Any, d_ff: int, name: str, fresh: bool) -> Terms:
    """ExpertFFN (reference_model/layers.py FeedForward.forward, no biases) over n tokens:
    gated: gate saves its input (``fresh``: a new storage), act its input [n, d_ff], the
    product act(gate) and up [n, d_ff] each, down the product; plain: up its input, gelu its
    input (relu its output), down the activation's output (relu: already saved)."""
    x, inner = (n * spec.d_model * sh.ib if fresh else 0), n * d_ff * sh.ib
    if spec.gated:
        return {f"{name}.gate": x, f"{name}.act": inner, name: 2 * inner, f"{name}.down": inner}
    down = 0 if spec.activation == "relu" else inner
    return {f"{name}.up": x, f"{name}.act": inner, f"{name}.down": down}


@register("saved.ffn.moe", "reference")
def moe_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Terms:
    """One MoE block over n tokens (names relative to the layer). Router: F.linear saves its
    input [n, d] (the norm output), softmax / sigmoid their output [n, E], topk its indices
    [n, k]; the renormalisation's division the top-k values [n, k] and their sum [n, 1].
    Experts, summed over e (n_e -> k n): torch.where's nonzero [n_e, 2] (token and slot are
    its columns, saved by x[token] and weights[token, slot]), the gathered weights [n_e],
    the expert's output [n_e, d] (both saved by the product), the product (saved by
    index_add_, IndexAddBackward0's source_), and each expert FFN's own (``ffn_saved``, its
    input x[token] fresh). Shared FFN: as an expert over n tokens, its input the router's."""
    d, E, k, cb, ib = spec.d_model, spec.n_experts, spec.n_experts_per_token, sh.cb, sh.ib
    S = k * n  # routed (token, expert) pairs
    router = n * d * cb + n * E * cb + n * k * INDEX_BYTES
    if spec.router_norm_topk is not False:
        router += n * k * cb + n * cb
    t: Terms = {"ffn.router": router}
    t["ffn.experts"] = S * 2 * INDEX_BYTES + S * cb + S * d * ib + S * d * cb
    for key, v in ffn_saved(spec, sh, S, spec.expert_d_ff, "ffn.experts", True).items():
        t[key] = t.get(key, 0) + v
    if spec.shared_expert_d_ff:
        t.update(ffn_saved(spec, sh, n, spec.shared_expert_d_ff, "ffn.shared", False))
    return t


@register("params.moe_ffn_shapes", "reference")
def moe_ffn_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...]:
    """reference_model/moe.py MoE's parameters in registration order: router.weight [E, d],
    then each expert's up, gate (gated), down (ExpertFFN registers them as FeedForward), then
    the shared FFN's."""
    d, E = spec.d_model, spec.n_experts

    def ffn(d_ff: int) -> tuple[tuple[int, ...], ...]:
        return ((d_ff, d),) + (((d_ff, d),) if spec.gated else ()) + ((d, d_ff),)

    out = ((E, d),) + ffn(spec.expert_d_ff) * E
    return out + (ffn(spec.shared_expert_d_ff) if spec.shared_expert_d_ff else ())


def moe_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """What the reference rules do not model of a mixture of experts (one line), else None."""
    if not spec.n_experts or spec.implementation != "reference":
        return None
    found = [f"{f}={getattr(spec, f)!r}" for f, v in UNBUILT.items() if getattr(spec, f) != v]
    if found:
        return f"{', '.join(found)}: not built by the reference model ({spec.name})"
    return None
