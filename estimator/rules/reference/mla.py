"""The reference model's multi-head latent attention (reference_model/mla.py LatentAttention,
issue 22l): what it saves for backward (``saved.latent_attention``), the walk of its backward
(``backward.latent_attention``), its forward without grad (``replay.latent_attention``), and
what is not modelled of it (``unmodelled.latent_attention``). ``attention.latent`` says whether
a spec's attention is walked by these rules: the reference model's is when kv_lora_rank is set;
a Hugging Face class's latent attention has its own rules (estimator/rules/hf/deepseek_v3.py).

Sizes in bytes; n = b s tokens, r_q = q_lora_rank, r_kv = kv_lora_rank, d_qk = d_nope + d_rope
(= spec.head_dim), d_v = v_head_dim, T = the positions kv_b_proj decompresses (s in training).
Modelled: decoder-only, causal pattern, eager or fused attention, fp32 or one low dtype (no
autocast), no dropout, checkpointing none or full, full fine-tuning, the cache in the compute
dtype; each other choice is refused by name.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.reference.backward import rmsnorm
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
Terms = dict[str, Any]


@register("attention.latent", "reference")
def reference_is_latent(spec: ModelSpec) -> bool:
    """Whether the self-attention is reference_model/mla.py's LatentAttention."""
    return bool(spec.kv_lora_rank)


@register("attention.latent", "hf")
def hf_is_not_walked_as_reference(spec: ModelSpec) -> bool:
    """A transformers class's latent attention (DeepseekV3Attention) is modelled by its own
    rules (estimator/rules/hf/deepseek_v3.py: the Llama walk with its saved set)."""
    return False


@register("unmodelled.latent_attention", "reference")
def latent_unmodelled(spec: ModelSpec, sh: Shapes) -> str | None:
    """What the latent-attention rules do not model (one line naming it), else None."""
    why = []
    if sh.autocast:
        why.append(f"autocast={sh.autocast!r}")
    if sh.dropout > 0:
        why.append(f"dropout={sh.dropout}")
    if sh.checkpointing not in ("none", "full"):
        why.append(f"checkpointing={sh.checkpointing!r}")
    if sh.finetune.kind != "full":
        why.append(f"finetune={sh.finetune.kind!r}")
    st = sh.stack("decoder")
    if st.pattern != "causal":
        why.append(f"attention_pattern={st.pattern!r}")
    if sh.mode != "train" and sh.kv_cache and sh.kv_dtype != sh.compute_dtype:
        why.append(f"kv_cache_dtype={sh.kv_dtype!r} (a cache in another dtype)")
    if sh.mode != "train" and sh.engine != "forward":
        why.append(f"engine={sh.engine!r}")
    if not why:
        return None
    return (
        f"{', '.join(why)} with latent attention (kv_lora_rank={spec.kv_lora_rank}) is not "
        f"modelled for memory of {spec.name} (modelled: causal, eager or fused, no autocast, "
        "no dropout, checkpointing none or full, full fine-tuning)"
    )


def _rmsnorm_saved(sh: Shapes, n: Any, width: int, storage: Any) -> Any:
    """reference_model/norms.py RMSNorm over [n, width]: pow saves its input (``storage``: the
    bytes of the storage that input views), rsqrt its output rms [n, 1], ``x * rms`` the input
    (the same storage) and rms, ``* weight`` the normalized x * rms [n, width]."""
    return storage + n * sh.cb + n * width * sh.cb


def values_saved(spec: ModelSpec, sh: Shapes, b: Any, s_k: Any) -> Any:
    """Bytes of v as the eager ``probs @ v`` saves it: v [b, h, T, d_v] is a split view of
    kv_b_proj's output [b, T, h, d_nope + d_v] transposed; matmul folds it into [b h, T, d_v],
    a copy when b > 1 and h > 1 (b and h do not merge), else a view, and the bmm then keeps
    kv_b_proj's whole output."""
    h, d_v, d_nope, cb = spec.n_heads, spec.v_head_dim, spec.qk_nope_head_dim, sh.cb
    if b == 1 or h == 1:
        return b * s_k * h * (d_nope + d_v) * cb
    return b * h * s_k * d_v * cb


@register("saved.latent_attention", "reference")
def latent_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, entries: Any, masked: bool) -> Terms:
    """Bytes LatentAttention.forward saves over s tokens (training: T = s), by module name
    relative to the attention (its rotary products: rule ``saved.rotary.layer``):
      q_a_proj   its input, the norm output [n, d] (kv_a_proj reads the same storage: 0)
      q_a_norm   RMSNorm of q_a_proj's output: input [n, r_q], rms [n, 1], x * rms [n, r_q]
      q_b_proj   its input [n, r_q]            (q_proj without q_lora_rank: [n, d])
      kv_a_norm  RMSNorm of the latent, a split view of kv_a_proj's output: that whole
                 storage [n, r_kv + d_rope], rms [n, 1], x * rms [n, r_kv]
      kv_b_proj  its input, the normed latent [n, r_kv]
      scores     eager: q and k [b, h, s, d_qk] (torch.cat outputs), the softmax output
                 [b, h, s, s], the causal mask ~ok [s, s] bool
      mix        eager: v (``values_saved``)
      sdpa       fused (CPU flash): q, k, v padded to d_qk [b, h, s, d_qk] (unpadded when
                 d_v = d_qk: a view of kv_b_proj's output, its whole storage), out
                 [b, h, s, d_qk], logsumexp [b, h, s] fp32
      o_proj     its input [n, h d_v]: the merged heads' reshape copy (the flash output
                 takes q's layout, [b, h, s, d_qk] contiguous here: torch.cat made q; at
                 h = 1 the merge is a view of the saved out: 0)"""
    n, cb, d, h = b * s, sh.cb, spec.d_model, spec.n_heads
    r_q, r_kv, d_rope = spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim
    d_qk, d_v, d_nope = spec.head_dim, spec.v_head_dim, spec.qk_nope_head_dim
    t: Terms = {}
    if r_q:
        t["q_a_proj"] = n * d * cb
        t["q_a_norm"] = _rmsnorm_saved(sh, n, r_q, n * r_q * cb)
        t["q_b_proj"] = n * r_q * cb
    else:
        t["q_proj"] = n * d * cb
    t["kv_a_proj"] = 0  # the same input as q's first projection
    t["kv_a_norm"] = _rmsnorm_saved(sh, n, r_kv, n * (r_kv + d_rope) * cb)
    t["kv_b_proj"] = n * r_kv * cb
    qk = 2 * b * h * s * d_qk * cb  # q, k
    if sh.attention_impl == "eager":
        t["scores"] = qk + b * h * entries * cb + (entries if masked else 0)
        t["mix"] = values_saved(spec, sh, b, s)
        t["o_proj"] = n * h * d_v * cb
        return t
    padded = d_v < d_qk
    v = b * h * s * d_qk * cb if padded else b * s * h * (d_nope + d_v) * cb
    t["sdpa"] = qk + v + b * h * s * d_qk * cb + b * h * s * FP32_BYTES
    t["o_proj"] = n * h * d_v * cb if h > 1 else 0  # h = 1: a view of the saved out
    return t


#: the walker (estimator.replay.backward.Backward); the step reads its fields
Walker = Any


def _rotary_backward(bw: Walker, p: str, x: Any, s: Any, own_input: bool) -> Any:
    """RotaryPositions backward of q's or k's rotary part (x bytes): MulBackward0 (grad *
    sin; sin freed), NegBackward0, MulBackward0 (grad * cos; cos freed), SplitBackward0's cat
    and the add of the two paths. ``own_input``: the incoming grad is its own storage (k's:
    ExpandBackward0's sum, freed once both products ran), not a slice of dq's. -> x bytes."""
    live, table = bw.live, s * bw.spec.qk_rope_head_dim * bw.cb
    live.take(x)  # grad * sin
    bw.free(p, table)  # sin
    live.take(x // 2, x)  # -x2; grad * cos
    live.drop(x if own_input else 0)
    bw.free(p, table)  # cos
    live.take(x)  # cat([.., ..]): the chunk's grad
    live.drop(x // 2, x)
    live.take(x)  # the two paths summed
    live.drop(x, x)
    return x


def _core_backward(bw: Walker, p: str, s: Any, d_o: Any) -> tuple[Any, Any, Any]:
    """The attention core's backward given the merged heads' grad (``d_o``, freed) -> dq, dk
    [b, h, s, d_qk] and dv [b, h, s, d_v] bytes. Eager: matmul folds the grad's
    [b, h, s, d_v] view of [b, s, h, d_v] into [b h, s, d_v] (a copy when b, h > 1), then
    BmmBackward0 of probs @ v (grad v, grad probs; v freed), SoftmaxBackward0, masked_fill's
    and the scale's MulBackward0, BmmBackward0 of q k^T (grad k, grad q). Fused:
    SliceBackward0 of the unpadded output (zeros [b, h, s, d_qk]), the CPU flash backward
    (dq, dk, dv padded at once), ConstantPadNdBackward0's slice copy of dv."""
    spec, sh, live, b = bw.spec, bw.sh, bw.live, bw.b
    h, d_qk, d_v, cb = spec.n_heads, spec.head_dim, spec.v_head_dim, bw.cb
    q, v = b * h * s * d_qk * cb, b * h * s * d_v * cb
    if sh.attention_impl != "eager":
        padded = d_v < d_qk
        g = live.take(q) if padded else d_o  # slice_backward
        live.drop(d_o if padded else 0)
        live.take(q, q, q)  # dq, dk, dv (padded)
        live.drop(g)
        bw.free(f"{p}.sdpa")
        if padded:
            live.take(v)  # F.pad's backward: dv [b, h, s, d_v]
            live.drop(q)
        return q, q, v
    if b > 1 and h > 1 and s > 1:  # matmul's contiguous copy of the grad
        live.take(v)
        live.drop(d_o)
        d_o = v
    scores = b * h * s * s * cb
    live.take(v, scores)  # probs @ v: grad v, grad probs
    live.drop(d_o)
    bw.free(f"{p}.mix")
    rule("backward.softmax", spec, sh)(bw, f"{p}.scores", scores, b * h * s * s)
    live.take(scores)  # masked_fill backward
    live.drop(scores)
    live.take(scores)  # * scale
    live.drop(scores)
    live.take(q, q)  # q k^T: grad k, grad q
    live.drop(scores)
    bw.free(f"{p}.scores")
    return q, q, v


@register("backward.latent_attention", "reference")
def latent_backward(bw: Walker, p: str, s: Any) -> Any:
    """LatentAttention.forward's backward (training: T = s) given its output's grad (held by
    the residual) -> the grad of its input [n, d]: o_proj; the core (``_core_backward``);
    k = cat(k_nope, k_rot.expand(h)): ExpandBackward0's sum over heads [b, 1, s, d_rope];
    the split of kv_b_proj's output: SplitWithSizesBackward0's cat [b, h, s, d_nope + d_v],
    then its transposed view copied to [b, s, h (d_nope + d_v)] (h > 1); kv_b_proj; rotary
    of k_rot, then of q's rotary part; kv_a_norm; the split of kv_a_proj's output: a cat
    [n, r_kv + d_rope]; kv_a_proj; q's split: a cat [b, h, s, d_qk] and its copy to
    [b, s, h d_qk] (h > 1); q_b_proj, q_a_norm, q_a_proj (or q_proj); the two input grads
    summed."""
    spec, live, b, cb = bw.spec, bw.live, bw.b, bw.cb
    h, d_v, d_rope = spec.n_heads, spec.v_head_dim, spec.qk_rope_head_dim
    r_kv, r_q, d_nope = spec.kv_lora_rank, spec.q_lora_rank, spec.qk_nope_head_dim
    n = b * s
    nd = n * spec.d_model * cb
    d_o = bw.linear(f"{p}.o_proj", n * h * d_v * cb)
    dq, dk, dv = _core_backward(bw, p, s, d_o)
    k_rot = live.take(n * d_rope * cb)  # ExpandBackward0: the sum over heads
    kv = n * h * (d_nope + d_v) * cb
    live.take(kv)  # SplitWithSizesBackward0: grads of k_nope and v in one tensor
    live.drop(dk, dv)
    if h > 1:  # its [b, s, h, ..] view made contiguous for kv_b_proj's output grad
        live.take(kv)
        live.drop(kv)
    d_latent = bw.linear(f"{p}.kv_b_proj", n * r_kv * cb, g=kv)
    k_rot = _rotary_backward(bw, p, k_rot, s, True)
    q_rot = _rotary_backward(bw, p, b * h * s * d_rope * cb, s, False)
    d_latent = rmsnorm(bw, f"{p}.kv_a_norm", d_latent, n, r_kv)
    compressed = live.take(n * (r_kv + d_rope) * cb)  # the split's cat
    live.drop(d_latent, k_rot)
    bw.linear(f"{p}.kv_a_proj", nd, g=compressed, stream=True)
    q = live.take(dq)  # the split's cat [b, h, s, d_qk]
    live.drop(dq, q_rot)
    if h > 1:  # its [b, s, h, d_qk] view made contiguous
        live.take(q)
        live.drop(q)
    bw.free(p)  # whatever is left of the rotary tables
    if r_q is None:
        bw.linear(f"{p}.q_proj", nd, g=q, stream=True)
    else:
        d_a = bw.linear(f"{p}.q_b_proj", n * r_q * cb, g=q)
        d_a = rmsnorm(bw, f"{p}.q_a_norm", d_a, n, r_q)
        bw.linear(f"{p}.q_a_proj", nd, g=d_a, stream=True)
    bw.residual(n)  # q's and kv_a_proj's input grads summed
    return nd


#: a forward replay (estimator.rules.reference.passes.Pass); the step reads its fields
Replay = Any


def _rmsnorm_forward(p: Replay, n: Any, width: int) -> Any:
    """RMSNorm over [n, width] without grad (Pass.norm's steps): pow, mean, + eps, rsqrt,
    x * rms, * weight; -> its output (its temporaries dropped)."""
    live, nd, col = p.live, n * width * p.cb, n * p.cb
    live.take(nd)  # x.pow(2): a contiguous [n, width] (the latent's: of a split view)
    live.take(col)  # mean
    live.drop(nd)
    live.take(col)  # + eps
    live.drop(col)
    live.take(col)  # rsqrt
    live.drop(col)
    live.take(nd, nd)  # x * rms, * weight
    live.drop(nd, col)
    return nd


def _attend_forward(p: Replay, s: Any, t: Any) -> Any:
    """LatentAttention.attend of s queries on t keys -> bytes of its output (eager [b, h, s,
    d_v]; fused the padded [b, h, s, d_qk], sliced by a view); its locals dropped."""
    spec, live, b, cb = p.spec, p.live, p.b, p.cb
    h, d_qk, d_v = spec.n_heads, spec.head_dim, spec.v_head_dim
    pos = live.take(s * INDEX_BYTES, t * INDEX_BYTES)  # q_pos, k_pos
    causal = t == s  # a pass without past keys: sdpa's is_causal, no mask
    if p.sh.attention_impl == "eager":
        ok = live.take(s * t)  # Pattern.allowed: [s, t] bool
        scores = live.take(b * h * s * t * cb)  # q @ k^T: q, k contiguous (torch.cat's)
        v_copy = b * h * t * d_v * cb if b > 1 and h > 1 and t > 1 else 0  # matmul's fold
        out = b * h * s * d_v * cb
        p.softmax_mix(scores, 0, s * t, v_copy, out, 0)
        live.drop(pos, ok)
        return out
    ok = 0 if causal else live.take(s * t)
    v_pad = live.take(b * h * t * d_qk * cb) if d_v < d_qk else 0  # F.pad(v)
    mask = 0
    if not causal:  # FusedAttention: additive(ok) = where(ok, zeros(()), min) [s, t]
        live.take(cb, cb)
        mask = live.take(s * t * cb)
        live.drop(cb, cb)
    out, lse = b * h * s * d_qk * cb, b * h * s * FP32_BYTES
    live.take(out, lse)  # CPU flash: output, logsumexp
    live.drop(lse, mask)
    live.drop(v_pad, ok, pos)
    return out


@register("replay.latent_attention", "reference")
def latent_forward(p: Replay, s: Any, start: Any, cache: Any) -> Any:
    """LatentAttention.forward without grad on the norm output [b, s, d] -> the bytes of
    o_proj's output; ``cache``: (positions held before, kept after) or None. q_a_proj,
    q_a_norm (its input dropped when it returns), q_b_proj (or q_proj); kv_a_proj (the local
    ``compressed``), kv_a_norm; the aranges and the rotary products of q's and k's rotary
    parts (Pass.rotary over d_rope); the cache's torch.cat of the latent and of k_rot (the
    old cache and the new position's tensors dropped; with nothing held the cache keeps the
    new ones); torch.cat of q; kv_b_proj over the T cached positions; torch.cat of k; the
    core; the merged heads' copy (none where the transposed output is a view: eager one
    query, or h = 1); o_proj. Its locals are dropped when it returns."""
    spec, live, b, cb = p.spec, p.live, p.b, p.cb
    h, d_qk, d_v, d_rope = spec.n_heads, spec.head_dim, spec.v_head_dim, spec.qk_rope_head_dim
    r_kv, r_q, d_nope = spec.kv_lora_rank, spec.q_lora_rank, spec.qk_nope_head_dim
    n = b * s
    if r_q is None:
        q = live.take(n * h * d_qk * cb)  # q_proj
    else:
        a = live.take(n * r_q * cb)  # q_a_proj
        a_n = _rmsnorm_forward(p, n, r_q)  # q_a_norm
        live.drop(a)
        q = live.take(n * h * d_qk * cb)  # q_b_proj
        live.drop(a_n)
    compressed = live.take(n * (r_kv + d_rope) * cb)  # kv_a_proj
    latent = _rmsnorm_forward(p, n, r_kv)  # kv_a_norm
    q_pos = live.take(s * INDEX_BYTES)
    q_rot = p.rotary(s, b * h * s * d_rope * cb)  # its input: a view of q
    k_rot = p.rotary(s, b * s * d_rope * cb)  # its input: a view of compressed
    t = s
    if cache is not None:
        held = cache[0]
        t = held + s
        if held:  # LayerCache.append_self: torch.cat([past, new]) of the latent, of k_rot
            live.take(b * t * r_kv * cb, b * t * d_rope * cb)
            live.drop(b * held * (r_kv + d_rope) * cb, latent, k_rot)  # old cache, new ones
        latent, k_rot = 0, 0  # the cache's now: kept after the pass
    q_cat = live.take(n * h * d_qk * cb)  # torch.cat([q_nope, q_rot])
    kv = live.take(b * t * h * (d_nope + d_v) * cb)  # kv_b_proj of every cached position
    k = live.take(b * h * t * d_qk * cb)  # torch.cat([k_nope, k_rot.expand(..)])
    o = _attend_forward(p, s, t)
    padded = p.sh.attention_impl != "eager" and d_v < d_qk
    copy = h > 1 and (s > 1 or padded)  # transpose + reshape of [b, h, s, d_v]
    merged = live.take(n * h * d_v * cb) if copy else 0
    live.drop(o if copy else 0)
    y = live.take(n * spec.d_model * cb)  # o_proj
    live.drop(merged or o, q, compressed, latent, q_pos, q_rot, k_rot, q_cat, kv, k)
    return y
