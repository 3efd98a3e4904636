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

from estimator.rules.live import GRADS
from estimator.rules.reference.passes import Pass
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
def moe_ffn_shapes(spec: ModelSpec) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """reference_model/moe.py MoE's parameters in registration order, (name under the layer,
    shape): router.weight [E, d], then each expert's up, gate (gated), down (ExpertFFN
    registers them as FeedForward), then the shared FFN's."""
    d, E = spec.d_model, spec.n_experts

    def ffn(name: str, d_ff: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
        gate = ((f"{name}.gate", (d_ff, d)),) if spec.gated else ()
        return ((f"{name}.up", (d_ff, d)),) + gate + ((f"{name}.down", (d, d_ff)),)

    out = (("ffn.router", (E, d)),) + ffn("ffn.experts", spec.expert_d_ff) * E
    return out + (ffn("ffn.shared", spec.shared_expert_d_ff) if spec.shared_expert_d_ff else ())


def moe_unsupported(spec: ModelSpec, sh: Shapes) -> str | None:
    """What the reference rules do not model of a mixture of experts (one line), else None."""
    if not spec.n_experts or spec.implementation != "reference":
        return None
    found = [f"{f}={getattr(spec, f)!r}" for f, v in UNBUILT.items() if getattr(spec, f) != v]
    if found:
        return f"{', '.join(found)}: not built by the reference model ({spec.name})"
    if sh.finetune.kind != "full":
        return f"finetune={sh.finetune.kind!r} on a mixture of experts (measured: full)"
    return None


# ---- backward (estimator/replay/backward.py walks it; traced with profiler/live.py) ------
@register("backward.layer_kinds", "reference")
def layer_kinds(spec: ModelSpec, stack: str, n_layers: int) -> Any:
    """(runs of (moe, layers) in the walk's order, last layer first; the layer count of each
    term only some layers have) for a stack with MoE layers, else None (every layer alike)."""
    if not spec.n_experts or stack != "decoder":
        return None
    runs: list[list[Any]] = []
    for i in reversed(range(n_layers)):
        moe = i not in spec.dense_layers
        if runs and runs[-1][0] == moe:
            runs[-1][1] += 1
        else:
            runs.append([moe, 1])
    n_moe = n_layers - len(spec.dense_layers)
    p = f"{stack}.layers.ffn"
    moe = [f"{p}.{m}{x}" for m in ("router", "experts", "shared") for x in MODULE_SUFFIXES]
    dense = [f"{p}{x}" for x in MODULE_SUFFIXES]
    shares = {k: n_moe for k in moe} | {k: n_layers - n_moe for k in dense}
    return [tuple(r) for r in runs], shares


#: an FFN's module names under its prefix: itself, its act and linears
MODULE_SUFFIXES = ("", ".act", ".up", ".gate", ".down")


@register("backward.layer_kinds", "hf")
def hf_layer_kinds(spec: ModelSpec, stack: str, n_layers: int) -> None:
    """transformers' classes: every layer walked alike (Mixtral's are all MoE; DeepSeek-V3's
    walk is the dense one, estimator/rules/hf/deepseek_v3.py)."""
    return None


def _ffn_backward(bw: Any, name: str, m: Any, d_ff: int, parts: int, g_out: Any) -> Any:
    """ExpertFFN's backward over m tokens, its saved tensors freed by part (``parts``
    experts share each term): gated, down's MmBackward0 (dW, then the grad input; its output's
    grad, ``g_out`` bytes, freed: 0 where the residual holds it), the product's MulBackward0
    (grad * up, grad * act), up's, the act's, gate's, the two grads of its input summed
    (autograd's input buffer); plain, down, the act's backward, up. -> the input's grad."""
    spec, live, ib = bw.spec, bw.live, bw.ib
    R, F = m * spec.d_model * ib, m * d_ff * ib

    def weight(lin: str) -> None:
        bw.live.take(bw.grads.get(lin, 0) // bw.shares.get(lin, bw.share) // parts, label=GRADS)

    weight(f"{name}.down")
    g = live.take(F)
    live.drop(g_out)
    bw.free(f"{name}.down", F if spec.gated or spec.activation != "relu" else 0)
    if spec.gated:
        live.take(F, F)  # grad * up (the act's), grad * act (up's)
        live.drop(g)
        bw.free(name, 2 * F)  # act(gate), up
        weight(f"{name}.up")
        live.take(R)
        live.drop(F)
        live.take(F)  # silu_backward / gelu_backward
        live.drop(F)
        bw.free(f"{name}.act", F)
        weight(f"{name}.gate")
        live.take(R)
        live.drop(F)
        bw.free(f"{name}.gate", R)
        live.take(R)  # up's and gate's input grads summed
        live.drop(R, R)
        return R
    live.take(F)  # gelu_backward / threshold_backward
    live.drop(g)
    bw.free(f"{name}.act", F)
    weight(f"{name}.up")
    live.take(R)
    live.drop(F)
    bw.free(f"{name}.up", R)
    return R


@register("backward.moe", "reference")
def moe_backward(bw: Any, p: str, n: Any) -> Any:
    """MoE.forward's backward given its output's grad (held by the residual), node by node
    in autograd's order (the latest made first): the shared FFN, the experts E-1 .. 0, each
    IndexAddBackward0 (index_select of the grad: its source's grad; the saved source freed),
    the product's MulBackward0 (grad * w, grad * out summed to [n_e, 1]), weights[token,
    slot]'s IndexBackward0 (new_zeros [n, k] + index_put, summed into the weights' grad),
    the expert FFN, x[token]'s IndexBackward0 (new_zeros [n, d] + index_put, summed into the
    input's grad; the pairs' indices freed); then the router: the renormalisation's
    DivBackward0 and SumBackward1, TopkBackward0 (zeros + scatter [n, E]), the softmax's /
    sigmoid's backward, its linear; the input's grads summed as they arrive. A dropout's
    grad (``bw.release``) lives until expert 0's IndexAddBackward0. -> the input's grad."""
    spec, sh, live = bw.spec, bw.sh, bw.live
    d, E, k, cb, ib = spec.d_model, spec.n_experts, spec.n_experts_per_token, bw.cb, bw.ib
    nd, nk, nE = n * d * cb, n * k * cb, n * E * cb
    release, bw.release = bw.release, 0
    buf = 0  # the input's grad buffer
    if spec.shared_expert_d_ff:
        buf = _ffn_backward(bw, f"{p}.ffn.shared", n, spec.shared_expert_d_ff, 1, 0)
    experts, wbuf = f"{p}.ffn.experts", 0
    counts = expert_counts(spec, sh, n)
    for e in reversed(range(E)):
        m = counts[e]
        R = m * d * ib
        gy = live.take(R)  # IndexAddBackward0: grad.index_select(0, token)
        if e == 0:
            live.drop(release)
        bw.free(experts, m * d * cb)  # its source, the weighted output
        live.take(R, R, m * cb)  # grad * w; grad * out -> sum [n_e, 1]
        live.drop(R, gy)
        bw.free(experts, m * cb + R)  # w, the expert's output
        live.take(nk, nk)  # IndexBackward0 of weights[token, slot]
        live.drop(nk, m * cb)
        if wbuf:
            live.take(nk)
            live.drop(nk, nk)
        wbuf = nk
        g = _ffn_backward(bw, experts, m, spec.expert_d_ff, E, R)  # its grad output: grad * w
        live.take(nd, nd)  # IndexBackward0 of x[token]: new_zeros, index_put
        live.drop(nd, g)
        bw.free(experts, m * 2 * INDEX_BYTES)  # torch.where's [n_e, 2]
        if buf:
            live.take(nd)
            live.drop(nd, nd)
        buf = nd
    router = f"{p}.ffn.router"
    if spec.router_norm_topk is not False:  # weights = raw / raw.sum(-1, keepdim=True)
        live.take(nk, nk, nk, nk)  # grad / sum; raw / sum, -grad, their product
        live.drop(nk, nk, nk)  # the last two temporaries, the incoming grad
        live.take(nk, n * cb)  # / sum; summed -> the sum's grad [n, 1]
        live.drop(nk, nk)
        bw.free(router, n * cb + nk)  # the sum, the raw top-k values
        live.take(nk)  # SumBackward1's expand summed into the raw values' grad
        live.drop(nk, n * cb)
    live.take(nE, nE)  # TopkBackward0: new_zeros, scatter
    live.drop(nE, nk)
    bw.free(router, n * k * INDEX_BYTES)
    live.take(nE)  # _softmax_backward_data / sigmoid_backward
    live.drop(nE)
    bw.free(router, nE)
    bw.grad(router)
    live.take(nd)  # the router's input grad
    live.drop(nE)
    bw.free(router)  # its input
    live.take(nd)  # summed with the experts' (and the shared FFN's)
    live.drop(nd, nd)
    return nd


# ---- the no-grad forward (estimator/replay/inference.py drives it) ----------------------
class MoEPass(Pass):
    """The reference model's forward replay (Pass, estimator/rules/reference/passes.py) whose
    MoE layers run ``MoE.forward`` (``moe``); the others the dense FFN."""

    def replayed_layers(self, stack: str) -> int:
        """Every layer up to two past the last change between dense and MoE layers."""
        n_layers = dict(self.spec.stacks)[stack]
        kinds = [self.is_moe(stack, i) for i in range(n_layers)]
        last = max((i for i in range(1, n_layers) if kinds[i] != kinds[i - 1]), default=0)
        return max(3, last + 2)

    def is_moe(self, stack: str, i: int) -> bool:
        return stack == "decoder" and i not in self.spec.dense_layers

    def stack(self, stack: str, s: int, start: int, cross_s: int = 0, cache=None) -> int:
        self.at = (stack, 0)  # the layer replayed next
        return super().stack(stack, s, start, cross_s, cache)

    def layer(self, stack: str, s: int, start: int, cross_s: int, cache) -> None:
        self.moe_now = self.is_moe(*self.at)
        self.at = (stack, self.at[1] + 1)
        super().layer(stack, s, start, cross_s, cache)

    def ffn(self, s: int) -> int:
        return self.moe(s) if self.moe_now else super().ffn(s)

    def expert(self, m: Any, d_ff: int) -> Any:
        """ExpertFFN over m tokens (its input held by the caller) -> its output [m, d]."""
        live, R, F = self.live, m * self.spec.d_model * self.cb, m * d_ff * self.cb
        if self.spec.gated:
            live.take(F, F)  # gate, act
            live.drop(F)
            live.take(F, F)  # up, act * up
            live.drop(F, F)
            y = live.take(R)  # down
            live.drop(F)
            return y
        live.take(F, F)  # up, act
        live.drop(F)
        y = live.take(R)  # down
        live.drop(F)
        return y

    def moe(self, s: int) -> Any:
        """MoE.forward on the norm output [b, s, d] -> its output [n, d]. Router: logits
        [n, E], scores, topk (values, int64 indices), the renormalisation's sum [n, 1] and
        quotient (the sum and the raw values go; logits and scores when it returns).
        Experts: zeros_like [n, d], then per expert idx == e (bool [n, k]), nonzero [n_e, 2]
        (the previous expert's goes with token, slot), x[token] [n_e, d], its FFN (x[token]
        goes after it), the gathered weights [n_e], the product [n_e, d] (kept until the next
        expert's; the FFN output and the weights go), index_add_ in place. Shared FFN, the
        sum; the weights and indices go when MoE.forward returns."""
        live, spec, n = self.live, self.spec, self.b * s
        d, E, k, cb = spec.d_model, spec.n_experts, spec.n_experts_per_token, self.cb
        nd, nk, nE = n * d * cb, n * k * cb, n * E * cb
        logits = live.take(nE)
        scores = live.take(nE)
        w = live.take(nk)
        idx = live.take(n * k * INDEX_BYTES)
        if spec.router_norm_topk is not False:
            col = live.take(n * cb)
            live.take(nk)
            live.drop(col, w)
        live.drop(logits, scores)
        out = live.take(nd)  # zeros_like
        pairs = y = 0
        for m in expert_counts(spec, self.sh, n):
            hit = live.take(n * k)  # idx == e: bool
            new = live.take(m * 2 * INDEX_BYTES)  # nonzero
            live.drop(hit, pairs)
            pairs = new
            x = live.take(m * d * cb)  # x[token]
            h = self.expert(m, spec.expert_d_ff)
            live.drop(x)
            g = live.take(m * cb)  # weights[token, slot]
            new = live.take(m * d * cb)  # * w
            live.drop(h, g, y)
            y = new
        live.drop(pairs, y)
        if spec.shared_expert_d_ff:
            shared = self.expert(n, spec.shared_expert_d_ff)
            live.take(nd)  # y + shared
            live.drop(shared, out)
        live.drop(nk, idx)  # the weights, the indices
        return nd


@register("replay.pass", "reference")
@register("replay.step", "reference")
def reference_pass(spec: ModelSpec, sh: Shapes, live: Any) -> Pass:
    """The forward replay of reference_model/: ``Pass`` (estimator/rules/reference/passes.py);
    a mixture of experts: ``MoEPass`` (issue 22e). Registered here, beside MoEPass, so that
    passes.py need not import this module (no import circle)."""
    return MoEPass(spec, sh, live) if spec.n_experts else Pass(spec, sh, live)
