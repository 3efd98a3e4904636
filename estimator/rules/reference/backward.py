"""The reference model's backward, per module kind: the steps of the walk in
estimator/replay/backward.py (rules ``backward.*``).

Each step takes what one module's backward ops return (``bw.live.take``) and drops what
autograd frees, naming the torch backward it mirrors. The walker binds the steps once
(``bw.linear``, ``bw.norm``, ``bw.ffn``, ``bw.core_flash``, ``bw.core_eager``, ...), and the
steps call each other through it, so an implementation that overrides one kind changes it
everywhere. Sizes in bytes: n = b s tokens, R = [n, d], F = [n, d_ff], P = [b, h, s, s_k],
compute dtype (``bw.cb``; what matmuls make: ``bw.ib``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from estimator.rules.finetune import dequant_bytes, kbit_backward_casts
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes, attention_pairs
from estimator.spec.model import ModelSpec
from estimator.sym import ceil_div

#: the walker (estimator.replay.backward.Backward); the steps read its fields
Walker = Any


@register("backward.linear", "reference")
def linear(bw: Walker, name: str, out: Any, free: bool = True, g: Any = 0,
           stream: bool = False, grad: Callable[[], None] | None = None,
           w32: Any = None) -> Any:  # fmt: skip
    """AddmmBackward0 / MmBackward0 (torch.nn.Linear): dW (db), then the grad input
    (``out`` bytes); the module's saved input is freed (``free``), then its grad output
    (``g`` bytes). -> the grad input. Under autocast: ``autocast_linear``."""
    bw.grad(name)
    dq, absmax = dequant_bytes(bw.spec, bw.sh, name)  # QLoRA: the 4-bit weight dequantized
    # after prepare_model_for_kbit_training: the output's ToCopyBackward0 makes the grad
    # output's compute-dtype copy, MatMul4Bit.backward the grad input in it, and the input
    # cast's ToCopyBackward0 the fp32 grad input (rules/finetune.py kbit_casts)
    x_low, g_low = kbit_backward_casts(bw.spec, bw.sh, name)
    bw.live.take(g_low)
    bw.live.take(dq, absmax)
    bw.live.drop(absmax)
    if x_low:  # MatMul4Bit's grad input, its dequantized weight freed, then the fp32 copy
        bw.live.take(x_low)
        bw.live.drop(dq, g_low)
        bw.live.take(out)
        bw.live.drop(x_low + bw.release)
    else:
        bw.live.take(out)
        bw.live.drop(dq + bw.release)
    bw.release = 0
    if free:
        bw.free(name)
    bw.free(f"{name}.lora_A")  # a LoRA-wrapped linear's own path (rules/finetune.py)
    bw.free(f"{name}.lora_B")
    bw.live.drop(g)
    return out


@register("backward.linear@autocast", "reference")
def autocast_linear(bw: Walker, name: str, out: Any, free: bool = True, g: Any = 0,
                    stream: bool = False, grad: Callable[[], None] | None = None,
                    w32: Any = None) -> Any:  # fmt: skip
    """nn.Linear under autocast (estimator/rules/autocast.py): AddmmBackward0 on the low
    copies makes dW, db and the grad input in the low dtype; the saved input cast and weight
    copy and the grad output are freed with the node; ToCopyBackward0 of the input's cast (an
    fp32 ``stream`` input) makes its fp32 grad (``out`` bytes), then the weight's (and
    bias's) ToCopyBackward0 the fp32 dW, db that AccumulateGrad keeps (``grad``, default
    the module's gradients; ``w32`` their bytes)."""
    live = bw.live
    w32 = bw.grads.get(name, 0) // bw.share if w32 is None else w32
    w_low = w32 * bw.ib // 4  # fp32 parameters: their grads' low copies
    low = out * bw.ib // bw.cb if stream else out  # the mm's grad input
    live.take(w_low, low)
    live.drop(bw.release, g)
    bw.release = 0
    if free:
        bw.free(name)
    bw.free(f"{name}.lora_A")  # LoRA's path (rules/finetune_autocast.py)
    bw.free(f"{name}.lora_B")
    if stream:  # the input cast's ToCopyBackward0: the fp32 grad of the input
        live.take(out)
        live.drop(low)
    (grad or (lambda: bw.grad(name)))()
    live.drop(w_low)
    return out


@register("backward.norm", "reference")
def norm(bw: Walker, name: str, c: Any, n: Any) -> Any:
    """The norm of ``bw.spec.norm``: ``layernorm`` or ``rmsnorm``."""
    return (layernorm if bw.spec.norm == "layernorm" else rmsnorm)(bw, name, c, n)


def layernorm(bw: Walker, name: str, c: Any, n: Any, d: Any = None) -> Any:
    """native_layer_norm_backward given the output's grad (``c`` bytes, freed): the input's
    grad [n, d] (and dw, db); the input, mean and rstd are freed. -> the input's grad.
    ``d``: the normalized width (default d_model; QK-norm's head_dim)."""
    nd = n * (bw.spec.d_model if d is None else d) * bw.cb
    bw.grad(name)
    bw.live.take(nd)
    bw.live.drop(c)
    bw.free(name)
    return nd


def rmsnorm(bw: Walker, name: str, c: Any, n: Any, d: Any = None) -> Any:
    """RMSNorm written out (reference_model/norms.py): MulBackward0 of * weight (grad,
    grad * x_rms for dw), of x * rms (grad * rms, grad * x), RsqrtBackward0 and MeanBackward1
    on [n, 1], PowBackward0 (pow, * 2, * grad), then the two paths' grads summed. ``d``: the
    normalized width (default d_model; a QK-norm's head_dim over n = tokens * heads rows)."""
    d = bw.spec.d_model if d is None else d
    live, nd, col = bw.live, n * d * bw.cb, n * bw.cb
    bw.grad(name)
    live.take(nd, nd)  # grad * weight; grad * x_rms (summed into dw)
    live.drop(nd, c)
    bw.free(name, nd)  # x_rms, saved by * weight
    live.take(nd, nd, col)  # grad * rms; grad * x -> sum: grad of rms [n, 1]
    live.drop(nd)
    live.drop(nd)  # the grad of x_rms
    live.take(col, col, col)  # rsqrt backward: pow, * -0.5, * grad
    live.drop(col, col, col)
    bw.free(name, col)  # rms
    live.take(nd)  # mean backward: expand / d
    live.drop(col)
    live.take(nd, nd, nd)  # pow backward: x ** 1, * 2, * grad
    live.drop(nd, nd, nd)
    bw.free(name)  # x, saved by pow
    live.take(nd)  # the two paths' grads summed
    live.drop(nd, nd)
    return nd


@register("backward.final_softcap", "reference")
def final_softcap(bw: Walker, logits: Any) -> None:
    """The logits' soft-cap between the loss and the LM head: what is left of the loss's
    saved set is freed with the log-softmax backward; then (issue 22p, reference_model/
    model.py SoftCap: ``tanh(logits / c) * c``) MulBackward0 (grad * c), TanhBackward0 (a
    new grad; tanh's saved output freed), DivBackward0, each freeing the grad before it."""
    bw.free("loss")
    if bw.spec.final_softcap is None:
        return
    live = bw.live
    live.take(logits)  # * c
    live.drop(logits)
    live.take(logits)  # tanh_backward
    live.drop(logits)
    bw.free("final_softcap")
    live.take(logits)  # / c
    live.drop(logits)


@register("backward.layer", "reference")
def own_layer(bw: Walker, p: str, n: Any, s: Any) -> bool:
    """A class's layer walked by its own rule (-> True: GPT-NeoX's parallel blocks, Gemma 2's
    sandwich norms); the reference model's layers: Backward.layer walks them (False), but
    with sandwich norms (issue 22p): ``sandwich_layer``."""
    if bw.spec.sublayer_norm != "sandwich":
        return False
    sandwich_layer(bw, p, n, s)
    if bw.sh.checkpointing == "full":
        bw.free(p.split(".")[0])  # the checkpointed layer input (as Backward.layer frees it)
    return True


def sandwich_layer(bw: Walker, p: str, n: Any, s: Any) -> None:
    """A layer with sandwich norms, the FFN sublayer's backward then the attention's, each
    ``x + OutNorm(F(Norm(x)))`` from the residual's grad R (live before and after;
    AddBackward0 hands it to both): the out norm's backward on R (a new grad, R kept), freed
    once the branch's first linear has run (``bw.release``, as a dropout's grad); the branch;
    the input norm's backward; its grad summed into R's buffer. The same nodes in
    reference_model/layers.py Layer.sublayer with out norms (no dropout) and in transformers'
    Gemma2DecoderLayer (estimator/rules/hf/gemma2.py)."""
    live, nd = bw.live, n * bw.spec.d_model * bw.cb
    branches = (
        ("ffn_out_norm", "ffn_norm", lambda: bw.ffn(p, n)),
        ("attn_out_norm", "attn_norm", lambda: bw.attention(f"{p}.self_attn", s, s, nd, False)),
    )
    for post, pre, branch in branches:
        bw.release = bw.norm(f"{p}.{post}", 0, n)
        d_pre = bw.norm(f"{p}.{pre}", branch(), n)
        live.take(nd)  # summed into the residual's grad
        live.drop(d_pre, nd)


@register("backward.qk_norm", "reference")
def qk_norm_backward(bw: Walker, p: str, s: Any, s_k: Any, dq: Any, dk: Any) -> tuple[Any, Any]:
    """Norms on q and k (QK-norm, issue 22p: reference_model/attention.py Attention.project,
    q_norm then k_norm in the forward), after the rotary backward: k_norm's backward on dk,
    then q_norm's on dq (autograd runs the later-created node first), each the spec's norm
    over b s h (h_kv) rows of d_h. -> the grads of q_proj's and k_proj's outputs."""
    spec = bw.spec
    if spec.qk_norm == "none":
        return dq, dk
    step = layernorm if spec.norm == "layernorm" else rmsnorm
    d_h = spec.head_dim
    dk = step(bw, f"{p}.k_norm", dk, bw.b * s_k * spec.n_kv_heads, d_h)
    dq = step(bw, f"{p}.q_norm", dq, bw.b * s * spec.n_heads, d_h)
    return dq, dk


@register("backward.residual", "reference")
def residual(bw: Walker, n: Any) -> None:
    """A second grad of one tensor (``n`` tokens) summed into the first: autograd's input
    buffer (AddBackward0's two uses of x) keeps the sum and frees both."""
    nd = n * bw.spec.d_model * bw.cb
    bw.live.take(nd)
    bw.live.drop(nd, nd)


@register("backward.dropout", "reference")
def dropout(bw: Walker, name: str, numel: Any, part: Any = None) -> Any:
    """MulBackward0 of x * mask (CPU native_dropout): grad * mask -> numel entries."""
    out = numel * bw.cb
    bw.live.take(out)
    bw.free(name, part)
    return out


@register("backward.ffn", "reference")
def ffn(bw: Walker, p: str, n: Any) -> Any:
    """The FFN's backward given its output's grad (held by the residual): plain or gated;
    a mixture of experts' layer (issue 22e: ``bw.moe``) its rule ``backward.moe``."""
    if bw.moe:
        return rule("backward.moe", bw.spec, bw.sh)(bw, p, n)
    return (ffn_gated if bw.spec.gated else ffn_plain)(bw, p, n)


def ffn_plain(bw: Walker, p: str, n: Any) -> Any:
    """FeedForward down(act(up(x))) given its output's grad (held by the residual):
    down's grad input F, gelu_backward / threshold_backward (+F), up. -> the input's grad."""
    inner, nd = n * bw.spec.d_ff * bw.ib, n * bw.spec.d_model * bw.cb
    d_down = bw.linear(f"{p}.ffn.down", inner)
    g = bw.ffn_act(f"{p}.ffn.act", inner, d_down)
    return bw.linear(f"{p}.ffn.up", nd, g=g, stream=True)


@register("backward.ffn.act", "reference")
def act_backward(bw: Walker, name: str, inner: Any, d_out: Any) -> Any:
    """gelu_backward / threshold_backward: the input's grad (``inner`` bytes) beside the
    output's (``d_out``, freed); the saved input (or output) freed. -> the input's grad."""
    bw.live.take(inner)
    bw.live.drop(d_out)
    bw.free(name)
    return inner


def ffn_gated(bw: Walker, p: str, n: Any) -> Any:
    """down(act(gate(x)) * up(x)): down, the product's MulBackward0 (a grad per factor,
    2 F), up, silu_backward / gelu_backward, gate; up's and gate's input grads summed."""
    live, inner, nd = bw.live, n * bw.spec.d_ff * bw.ib, n * bw.spec.d_model * bw.cb
    d_down = bw.linear(f"{p}.ffn.down", inner)
    live.take(inner, inner)
    live.drop(d_down)
    bw.free(f"{p}.ffn")
    bw.linear(f"{p}.ffn.up", nd, g=inner, stream=True)
    bw.ffn_act(f"{p}.ffn.act", inner, inner)  # the act's grad replaces the product's
    bw.linear(f"{p}.ffn.gate", nd, g=inner, stream=True)
    bw.residual(n)
    return nd


@register("backward.rotary", "reference")
def rotary(bw: Walker, x: Any) -> Any:
    """RotaryPositions backward of q or k (x bytes, freed): MulBackward0 (grad * sin),
    NegBackward0, MulBackward0 (grad * cos), SplitBackward0's cat and add. Partial rotary
    (issue 22p): ``partial_rotary``."""
    live = bw.live
    if (bw.spec.rotary_dim or bw.spec.head_dim) != bw.spec.head_dim:
        return partial_rotary(bw, x)
    live.take(x, x // 2, x)
    live.drop(x)
    live.take(x)
    live.drop(x, x // 2)
    live.take(x)
    live.drop(x, x)
    return x


def partial_rotary(bw: Walker, x: Any) -> Any:
    """RotaryPositions with rotary_dim r < d_h, cat([rotate(x[..., :r]), x[..., r:]])
    backward (x bytes [.., d_h]; part = x r / d_h): CatBackward0 hands views of the grad to
    both; SliceBackward0 of x[..., r:] (the later node) first, zeros [.., d_h] with the
    pass grad copied in; the rotation's steps on the part (as ``rotary``), the incoming grad
    freed with its last view; SliceBackward0 of x[..., :r]; the two grads summed."""
    live, spec = bw.live, bw.spec
    part = x * spec.rotary_dim // spec.head_dim
    live.take(x)  # SliceBackward0 of x[..., r:]
    live.take(part, part // 2, part)  # grad * sin, neg, grad * cos
    live.drop(x)  # the incoming grad
    live.take(part)  # SplitBackward0's cat
    live.drop(part, part // 2)
    live.take(part)  # add
    live.drop(part, part)
    live.take(x)  # SliceBackward0 of x[..., :r]
    live.drop(part)
    live.take(x)  # the two grads summed
    live.drop(x, x)
    return x


@register("backward.flash", "reference")
def flash_backward(spec: ModelSpec, sh: Shapes, cross: bool) -> bool:
    """Whether fused (unchunked) attention ran the flash kernel (else sdpa's math ops: CPU
    training with dropout, issue 22f, estimator/rules/reference/saved.py math_sdpa)."""
    return not rule("sdpa.math", spec)(sh)


@register("backward.core.flash", "reference")
def flash_core(bw: Walker, p: str, s: Any, s_k: Any, d_o: Any, cross: bool) -> tuple[Any, Any, Any]:
    """_scaled_dot_product_flash_attention_for_cpu_backward: dq [b, h, s, d_h], dk, dv
    [b, h_kv, s_k, d_h] at once beside o_proj's grad (``d_o``, freed); its saved set freed."""
    spec, cb, b = bw.spec, bw.ib, bw.b
    a = b * s * spec.n_heads * spec.head_dim * cb
    kv = b * s_k * spec.n_kv_heads * spec.head_dim * cb
    bw.live.take(a, kv, kv)
    bw.live.drop(d_o)
    bw.free(f"{p}.sdpa")
    return a, kv, kv


@register("backward.softmax", "reference")
@register("backward.softmax.fused", "reference")
def softmax(bw: Walker, core: str, scores: Any, entries: Any) -> None:
    """SoftmaxBackward0 given the probabilities' grad (``scores`` bytes): its grad input,
    the grad output freed, the saved probabilities (``core``'s) freed."""
    bw.live.take(scores)
    bw.live.drop(scores)
    bw.free(core, scores)  # the probabilities


def attn_softcap(bw: Walker, core: str, scores: Any) -> None:
    """AttentionScores' soft-cap ``tanh(scores / c) * c`` backward (issue 22p): MulBackward0
    (grad * c), TanhBackward0 (a new grad; tanh's saved output, in ``core``'s set, freed),
    DivBackward0, each freeing the grad before it."""
    live = bw.live
    live.take(scores)  # * c
    live.drop(scores)
    live.take(scores)  # tanh_backward
    live.drop(scores)
    bw.free(core, scores)  # tanh's output
    live.take(scores)  # / c
    live.drop(scores)


@register("backward.core.eager", "reference")
def eager_core(bw: Walker, p: str, s: Any, s_k: Any, d_o: Any, cross: bool) -> tuple[Any, Any, Any]:
    """AttentionScores + AttentionMix backward (and chunked blocks, and fused chunked:
    math sdpa): -> (dq, dk, dv) bytes, the k, v grads summed back to h_kv heads."""
    spec, cb, b, live = bw.spec, bw.ib, bw.b, bw.live
    h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
    st = bw.sh.stack(p.split(".")[0])
    pattern, window = st.pattern, st.window
    chunked = bw.chunked_at(p, cross, s)
    entries = s * s_k if cross else attention_pairs(pattern, window, False, s, "full")
    s_pad = ceil_div(s, window) * window if chunked else s
    scores = b * h * entries * cb
    a_pad = b * h * s_pad * d_h * cb  # q (and repeated k, v) as the matmuls see them
    kv_pad = b * h * (s_pad if chunked else s_k) * d_h * cb
    fused = bw.sh.attention_impl == "fused"  # chunked + fused: math sdpa (autograd ops)
    if chunked:  # slice backward: zeros [b, h, n_c c, d_h]; then the block-layout clone
        live.take(a_pad)
        live.drop(d_o)
        d_o = a_pad
    live.take(kv_pad, scores)  # probs @ v: grad v, grad probs
    live.drop(d_o)
    bw.free(f"{p}.mix")
    # issue 22f: unchunked fused attention with dropout runs the math sdpa (at::dropout)
    fused_drop = fused and not chunked and bw.sh.dropout > 0
    if fused:  # math sdpa: the bmm's saved v block copy (and dropped probs) go with its node
        bw.free(f"{p}.sdpa", kv_pad + (scores if fused_drop else 0))
    if bw.sh.dropout > 0 and (fused_drop or not fused):  # grad * mask
        live.take(scores)
        live.drop(scores)
        if fused:  # native_dropout_backward: the mask goes with its node
            bw.free(f"{p}.sdpa", scores)
        else:
            bw.free(f"{p}.scores.dropout")
    core = f"{p}.sdpa" if fused else f"{p}.scores"
    step = "backward.softmax.fused" if fused else "backward.softmax"
    rule(step, spec, bw.sh)(bw, core, scores, b * h * entries)
    if not cross and pattern != "full" and not fused:  # masked_fill backward
        live.take(scores)
        live.drop(scores)
    bias = 0
    if spec.position == "relative" and not cross:  # + bias: grad summed over the batch
        side = window if chunked else s
        bias = live.take(h * side * side * cb)
    if spec.attn_softcap is not None and not fused:  # issue 22p: * c, tanh, / c
        attn_softcap(bw, core, scores)
    if not fused:
        live.take(scores)  # * scale
        live.drop(scores)
    live.take(kv_pad, a_pad)  # Q K^T: grad k, grad q
    live.drop(scores)
    bw.free(core)
    if fused:  # math sdpa scaled q and k by sqrt(scale) each: their grads are copies
        for g in (a_pad, kv_pad):
            live.take(g)
            live.drop(g)
    live.drop(bias)  # embedding backward of the bias (bucket ids freed with self_attn)
    dq, dk, dv = a_pad, kv_pad, kv_pad
    if chunked:  # per q, k, v: block clone, then ConstantPadNd backward's copy [b,h,s,d_h]
        a = b * h * s * d_h * cb
        for _ in range(3):
            live.take(a_pad)
            live.drop(a_pad)
            live.take(a)
            live.drop(a_pad)
        dq, dk, dv = a, a, a
        if h_kv < h:  # repeat_kv's sum to h_kv heads: [b, h_kv, s, d_h]
            kv = b * h_kv * s * d_h * cb
            for _ in range(2):
                live.take(kv)
                live.drop(a)
            dk, dv = kv, kv
    elif h_kv < h:  # repeat_interleave backward: ExpandBackward0's sum
        kv = b * h_kv * s_k * d_h * cb
        for _ in range(2):
            live.take(kv)
            live.drop(kv_pad)
        dk, dv = kv, kv
    return dq, dk, dv
