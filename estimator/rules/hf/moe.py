"""Mixture-of-experts rules of transformers' Mixtral (issue 22), registered for the class
MixtralForCausalLM; attention, norms and the head are the Llama rules
(estimator/rules/hf/decoders.py). Measured in tests/tgauge/test_hf_rules_families.py.

modeling_mixtral.MixtralSparseMoeBlock.forward: the router (MixtralTopKRouter.forward:
``F.linear``, ``softmax(logits.float())``, ``topk``, ``/= sum``), then MixtralExperts, whose
forward ``use_experts_implementation`` (integrations/moe.py) dispatches on
``config._experts_implementation`` (Workload.experts_impl). Modelled: ``grouped_mm``, what
transformers picks when none is given (modeling_utils.get_correct_experts_implementation) and
what runs on CPU with torch >= 2.9 (moe._can_use_grouped_mm):
grouped_mm_experts_forward sorts the S = k n (token, expert) pairs by expert, gathers their
inputs, runs one grouped matmul up and one down over all experts (offsets from torch.histc),
weights, unsorts and sums the k results per token.

Routing assumption: none is needed here. Every tensor grouped_mm_experts_forward makes or
saves is sized by S = k n (or by n, or E), whichever experts the router picks; the per-expert
loop (``eager``: one matmul per hit expert, sized by its token count) and ``batched_mm``
(every pair's weights gathered) are refused by name (estimator/rules/features.py).

Sizes: n = b s tokens, S = k n pairs, E experts, d_e an expert's d_ff; the experts run in the
model dtype (``sh.ib``), the router's softmax, top-k values and the routing weights in fp32.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.decoders_pass import HFPass
from estimator.rules.live import Live
from estimator.rules.reference.backward import Walker
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
OFFSET_BYTES = 4  # torch.cumsum(tokens_per_expert, dtype=torch.int32)
#: the classes these rules describe (their MoE block is Mixtral's)
CLASSES = ("MixtralForCausalLM",)


def router_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """MixtralTopKRouter.forward: F.linear saves its input (the norm output [n, d], a new
    tensor); softmax(logits.float()) its fp32 output [n, E]; topk its indices [n, k] int64;
    ``router_top_value /= sum`` the values [n, k] and the sum [n, 1] (fp32)."""
    E, k = spec.n_experts, spec.n_experts_per_token
    linear_in = n * spec.d_model * sh.cb
    return linear_in + n * E * FP32_BYTES + n * k * INDEX_BYTES + (n * k + n) * FP32_BYTES


def experts_saved(spec: ModelSpec, sh: Shapes, n: Any) -> dict[str, Any]:
    """grouped_mm_experts_forward's saved tensors: ``hidden_states[perm // k]`` its index
    [S] int64 (the gathered [S, d] is saved by the first _grouped_mm, with the offsets [E]
    int32); ``sample_weights[perm]`` perm [S] int64; _default_apply_gate's act_fn saves
    ``gate``, a view of the whole up output [S, 2 d_e] (``experts.act``), ``act(gate) * up``
    the act output [S, d_e]; the down _grouped_mm its input [S, d_e]; ``proj_out *
    sample_weights_g.unsqueeze(-1)`` both ([S, d] and the fp32 [S]); ``weighted_out[inv_perm]``
    inv_perm [S] int64; the view + sum(dim=1) nothing."""
    S, d, d_e, ib = n * spec.n_experts_per_token, spec.d_model, spec.expert_d_ff, sh.ib
    ids = 3 * S * INDEX_BYTES  # perm // k, perm, inv_perm
    own = ids + S * d * ib + spec.n_experts * OFFSET_BYTES + 2 * S * d_e * ib
    own += S * d * ib + S * FP32_BYTES  # proj_out, sample_weights_g
    return {"ffn.experts": own, "ffn.experts.act": S * 2 * d_e * ib}


@register("params.moe_ffn_shapes", "hf")
def moe_ffn_shapes(spec: ModelSpec) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """A transformers MoE block's parameters in registration order, (name under the layer,
    shape) (issue 22e moved here from estimator/terms/params.py and terms/finetune.py): the
    router weight [E, d] (MixtralTopKRouter.weight), the experts' gate_up [E, 2 d_e, d] and
    down [E, d, d_e] (MixtralExperts), then the shared MLP's gate, up, down and the shared
    expert's gate [1, d] (Qwen2MoeSparseMoeBlock)."""
    d, E, d_e = spec.d_model, spec.n_experts, spec.expert_d_ff
    out: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("ffn.router", (E, d)),
        ("ffn.experts.gate_up", (E, 2 * d_e, d)),
        ("ffn.experts.down", (E, d, d_e)),
    )
    if spec.shared_expert_d_ff:
        d_s = spec.shared_expert_d_ff
        out += (("ffn.shared.gate", (d_s, d)), ("ffn.shared.up", (d_s, d)),
                ("ffn.shared.down", (d, d_s)))  # fmt: skip
    if spec.shared_expert_gate:
        out += (("ffn.shared_gate", (1, d)),)
    return out


@register("saved.ffn.moe", *CLASSES)
def moe_saved(spec: ModelSpec, sh: Shapes, n: Any) -> dict[str, Any]:
    """One MoE block over n tokens (layer-relative names): the router and the experts."""
    return {"ffn.router": router_saved(spec, sh, n), **experts_saved(spec, sh, n)}


@register("backward.ffn", *CLASSES)
def moe_backward(bw: Walker, p: str, n: Any) -> Any:
    """The MoE block's backward given its output's grad (held by the residual), node by node
    in autograd's order as the live tracker reads it (profiler/live.py): ViewBackward0 of
    the summed view (a copy [S, d] of the expanded grad); IndexBackward0 of ``[inv_perm]``
    (new_zeros, then an out-of-place index_put [S, d]); MulBackward0 of the routing weights
    (grad * w, grad * proj_out summed to [S, 1]; these grads are fp32, the routing weights'
    dtype, and a low model dtype gets ToCopyBackward0's fp32 grad first and grad * w cast
    back to proj_out's dtype); GroupedMmBackward0 of down (the weight's
    grad [E, d, d_e] first, then the input's [S, d_e]); the product's MulBackward0 (2 [S,
    d_e]); silu_backward; SplitBackward0's cat [S, 2 d_e]; GroupedMmBackward0 of gate_up;
    IndexBackward0 of the routing weights' gather ([S] fp32) and of the inputs' gather
    ([n, d]); the router: DivBackward0, TopkBackward0 (zeros + scatter [n, E]),
    SoftmaxBackward0, its linear; the norm output's two grads summed.
    -> the block input's grad [n, d]."""
    live, spec = bw.live, bw.spec
    S, d, d_e, ib = n * spec.n_experts_per_token, spec.d_model, spec.expert_d_ff, bw.ib
    E, k = spec.n_experts, spec.n_experts_per_token
    Sd, Se, nd, S4 = S * d * ib, S * d_e * ib, n * d * bw.cb, S * FP32_BYTES
    name = f"{p}.ffn.experts"
    # ``proj_out * sample_weights_g`` promotes to fp32 (the router's weights): what follows
    # it, and its grads, are fp32; ``.to(hidden_states.dtype)`` casts back
    Sf, nf = S * d * FP32_BYTES, n * d * FP32_BYTES
    low = ib != FP32_BYTES
    live.take(nf if low else 0)  # ToCopyBackward0 of the final .to: an fp32 grad [n, d]
    live.take(Sf)  # ViewBackward0: the expanded grad reshaped, a copy
    live.drop(nf if low else 0)
    live.take(Sf, Sf)  # IndexBackward0: new_zeros, index_put
    live.drop(Sf, Sf)
    bw.free(name, S * INDEX_BYTES)  # inv_perm
    live.take(Sf, Sf)  # grad * w; grad * proj_out
    g = live.take(Sd) if low else Sf  # grad * w cast to proj_out's dtype
    live.drop(Sf if low else 0)
    live.take(S4)  # grad * proj_out summed to [S, 1]
    live.drop(Sf, Sf)  # grad * proj_out, the incoming grad
    bw.free(name, Sd + S4)  # proj_out, sample_weights_g
    bw.grad(f"{name}.down")  # GroupedMmBackward0: the weight's grad, then the input's
    live.take(Se)
    live.drop(g)
    bw.free(name, Se)  # its input (the product)
    live.take(Se, Se)  # the product's grads: grad * up, grad * act(gate)
    live.drop(Se)
    bw.free(name, Se)  # act(gate)
    live.take(Se)  # silu_backward
    live.drop(Se)
    bw.free(f"{name}.act")  # gate (the up output's storage)
    live.take(2 * Se)  # SplitBackward0: the two grads concatenated
    live.drop(Se, Se)
    bw.grad(f"{name}.gate")  # gate_up's weight grad [E, 2 d_e, d]
    bw.grad(f"{name}.up")
    live.take(Sd)
    live.drop(2 * Se)
    bw.free(name, Sd + E * OFFSET_BYTES)  # the gathered inputs, the offsets
    live.take(S4, S4)  # IndexBackward0 of sample_weights[perm]: new_zeros, index_put
    live.drop(S4, S4)  # new_zeros, the [S, 1] grad
    bw.free(name, S * INDEX_BYTES)  # perm
    live.take(nd, nd)  # IndexBackward0 of hidden_states[perm // k]: new_zeros, index_put
    live.drop(nd, Sd)
    bw.free(name)  # perm // k
    router = f"{p}.ffn.router"
    nk, col = n * k * FP32_BYTES, n * FP32_BYTES
    live.take(nk, nk, col)  # DivBackward0: grad / sum; -grad * value / sum^2 -> [n, 1]
    live.drop(S4, nk)
    bw.free(router, nk + col)  # the values, the sum
    live.take(nk)  # SumBackward0's expand summed into the values' grad
    live.drop(nk, col)
    live.take(n * E * FP32_BYTES)  # TopkBackward0: zeros + scatter [n, E]
    live.drop(nk)
    bw.free(router, n * k * INDEX_BYTES)  # the indices
    live.take(n * E * FP32_BYTES)  # SoftmaxBackward0
    live.drop(n * E * FP32_BYTES)
    bw.free(router, n * E * FP32_BYTES)  # the probabilities
    bw.linear(router, nd, g=n * E * FP32_BYTES, stream=True)  # the router's input grad
    bw.residual(n)  # the experts' and the router's grads of the norm output summed
    return nd


class MoEPass(HFPass):
    """HFPass (estimator/rules/hf/decoders_pass.py) whose FFN is Mixtral's MoE block, as the
    live tracker reads a no-grad forward of it."""

    def ffn(self, s: int) -> int:
        """MixtralSparseMoeBlock.forward on the norm output [b, s, d] -> its output [n, d].
        The router: logits [n, E] (fp32 in an fp32 model; the block's ``_`` keeps them to
        its end), softmax, topk (values fp32, indices int64), the sum [n, 1], ``/=`` in
        place. grouped_mm_experts_forward: sort (ids, perm), ``perm // k``, the gathered
        inputs [S, d], the weights' gather [S], ``expert_ids_g.float()``, histc, cumsum; up
        [S, 2 d_e], silu [S, d_e], the product (the up output and silu's go), down [S, d]
        (the product goes), ``* weights`` [S, d], inv_perm (empty_like, arange, index_put_),
        ``[inv_perm]`` (the weighted one goes), the sum over k [n, d], all three fp32 (the
        routing weights' dtype), cast back to the model dtype; then its locals go, and the
        block's."""
        live, spec, n = self.live, self.spec, self.b * s
        E, k = spec.n_experts, spec.n_experts_per_token
        logits = live.take(n * E * self.cb)
        probs = live.take(n * E * FP32_BYTES)
        routed = live.take(n * k * FP32_BYTES, n * k * INDEX_BYTES)  # topk
        col = live.take(n * FP32_BYTES)  # the sum
        live.drop(probs, col)  # the router returns
        y = self.experts(n)
        live.drop(logits, routed)  # the block returns
        return y

    def experts(self, n: int) -> int:
        """grouped_mm_experts_forward over n tokens (``ffn``'s steps from the sort on), with
        the router's outputs live -> the summed output [n, d] in the model dtype."""
        live, spec = self.live, self.spec
        E, k, d, d_e = spec.n_experts, spec.n_experts_per_token, spec.d_model, spec.expert_d_ff
        S = n * k
        Sd, Se = S * d * self.cb, S * d_e * self.cb
        ids = live.take(S * INDEX_BYTES, S * INDEX_BYTES)  # sort: expert_ids_g, perm
        div = live.take(S * INDEX_BYTES)  # perm // k
        x = live.take(Sd)  # hidden_states[perm // k]
        live.drop(div)  # the index goes once the gather returns
        w = live.take(S * FP32_BYTES)  # sample_weights[perm]
        counts = live.take(S * FP32_BYTES, E * FP32_BYTES, E * OFFSET_BYTES)  # histc, cumsum
        up = live.take(2 * Se)  # the up _grouped_mm
        act = live.take(Se)  # silu(gate)
        prod = live.take(Se)  # * up
        live.drop(up, act)
        down = live.take(Sd)  # the down _grouped_mm
        live.drop(prod)
        Sf = S * d * FP32_BYTES  # * sample_weights_g (fp32) promotes: fp32 from here
        weighted = live.take(Sf)
        inv = live.take(S * INDEX_BYTES)  # empty_like(perm)
        rng = live.take(S * INDEX_BYTES)  # arange, gone once ``inv_perm[perm] =`` returns
        live.drop(rng)
        back = live.take(Sf)  # weighted_out[inv_perm]
        live.drop(weighted)
        summed = live.take(n * d * FP32_BYTES)  # view + sum(dim=1)
        cast = self.cb != FP32_BYTES  # .to(hidden_states.dtype): a copy in a low dtype
        y = live.take(n * d * self.cb) if cast else summed
        live.drop(back, down, x, inv, w, ids, counts, summed if cast else 0)
        return y


@register("replay.pass", *CLASSES)
@register("replay.step", *CLASSES)
def moe_pass(spec: ModelSpec, sh: Shapes, live: Live) -> MoEPass:
    """A no-grad forward of a transformers MoE LM: ``MoEPass``."""
    return MoEPass(spec, sh, live)
