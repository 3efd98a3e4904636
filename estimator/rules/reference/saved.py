"""What the reference model's modules save for backward, per module kind (rules ``saved.*``).

The term functions of estimator/terms/activations.py ask for these by kind; an implementation
whose code saves something else registers its own rule (estimator/rules/hf/, autocast). Sizes
in bytes, ``sh`` the resolved run (estimator/shapes.py): ``sh.cb`` bytes per element of the
compute dtype, ``sh.ib`` of what matmuls make (the autocast dtype under autocast).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

FP32_BYTES = 4
Terms = dict[str, Any]


@register("saved.linear", "reference")
def plain_linear_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, d_out: int,
                       stream: bool, fresh: bool) -> Any:  # fmt: skip
    """AddmmBackward0 / MmBackward0 keep the input [n, d_in] (torch.nn.functional.linear)
    and the weight, a parameter (not an activation): the input when it is a new storage."""
    return n * d_in * sh.cb if fresh else 0


@register("saved.sdpa", "reference")
def sdpa_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any, masked: bool,
               fused_mask: bool, window: int | None, cross: bool) -> Terms:  # fmt: skip
    """Bytes fused (CPU flash) attention saves per call (term "sdpa") and what its output
    adds to o_proj's saved input (term "o_proj"): q [b,h,s,d_h], k, v [b,h_kv,s_k,d_h],
    out, logsumexp [b,h,s] fp32; ``fused_mask``: its additive attn_mask where(ok, 0, min)
    [s, s_k] (reference_model/attention.py). The flash/efficient kernels return out as a
    [b,h,s,d_h] view of a [b,s,h,d_h] buffer: o_proj's input (heads merged) is a view of
    the storage sdpa already saved (0)."""
    cb, h, h_kv, d_h = sh.ib, spec.n_heads, spec.n_kv_heads, spec.head_dim
    if math_sdpa(sh):  # issue 22f: _scaled_dot_product_attention_math's autograd ops
        return math_sdpa_saved(spec, sh, b, s, s_k)
    out = (2 * b * s * h * d_h + 2 * b * s_k * h_kv * d_h) * cb + b * h * s * FP32_BYTES
    # issue 22p: partial rotary's q is torch.cat's own [b, h, s, d_h]: the kernel's output
    # follows that layout, and o_proj's merged heads are a copy
    partial = not cross and (spec.rotary_dim or spec.head_dim) != spec.head_dim
    return {"sdpa": out + (s * s_k * cb if fused_mask else 0),
            "o_proj": b * s * h * d_h * cb if partial else 0}  # fmt: skip


@register("sdpa.math", "reference")
def math_sdpa(sh: Shapes) -> bool:
    """Whether unchunked fused attention runs torch's math sdpa rather than CPU flash (issue
    22f): a training pass with dropout on CPU. The CPU backend choice
    (aten/src/ATen/native/transformers/sdp_utils_cpp.cpp, use_flash_attention_cpp) rejects
    dropout_p > 0 (check_for_dropout), so F.scaled_dot_product_attention falls back to
    _scaled_dot_product_attention_math (aten/src/ATen/native/transformers/attention.cpp);
    FusedAttention passes dropout_p only in training (reference_model/attention.py).
    (Hugging Face models: rule ``sdpa.math`` "hf", not modelled there.)"""
    return sh.training and sh.dropout > 0 and sh.device == "cpu"


def math_sdpa_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any) -> Terms:
    """What _scaled_dot_product_attention_math saves with dropout (issue 22f): the first
    matmul q * sqrt(scale) [b,h,s,d_h] and k^T * sqrt(scale) (k repeated to h heads under
    GQA: pre_process_group_query_attention_input), _safe_softmax its output [b,h,s,s_k],
    at::dropout (native_dropout) its mask (CPU: in the compute dtype, as
    estimator/terms/activations.py mask_bytes), the second matmul the dropped probabilities
    and v (repeated). The additive mask (add_ in place) and is_causal's tril are not saved.
    Its output is a new contiguous [b,h,s,d_h] (matmul's _unsafe_view), so Attention.forward's
    transpose + reshape copies it: o_proj saves that copy [b*s, h*d_h]."""
    cb, h, d_h = sh.ib, spec.n_heads, spec.head_dim
    probs = b * h * s * s_k * cb
    return {"sdpa": (b * h * s * d_h + 2 * b * h * s_k * d_h) * cb + 3 * probs,
            "o_proj": b * s * h * d_h * cb}  # fmt: skip


@register("saved.ffn.act", "reference")
def ffn_act_saved(spec: ModelSpec, sh: Shapes, n: Any, width: Any = None) -> Any:
    """Bytes a GELU (nn.GELU) saves over n tokens: its input [n, d_ff] (``width`` when the
    activation runs on other than the FFN's inner width: BERT's MLM head, [n, d])."""
    return n * (spec.d_ff if width is None else width) * sh.ib


@register("saved.rotary.layer", "reference")
def rotary_layer_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """Bytes one layer's rotary products save: x * cos, rot(x) * sin keep cos and sin
    [s, r], built per call (reference_model/positions.py), for q and for k (latent
    attention: over qk_rope_head_dim, its rotary part); r = d_h, or ``rotary_dim`` (partial
    rotary, issue 22p: the outer torch.cat saves nothing)."""
    d_rot = spec.rotary_dim or spec.qk_rope_head_dim or spec.head_dim  # issue 22l, 22p
    return 2 * 2 * s * d_rot * sh.ib  # cast to q's dtype


@register("saved.rotary.stack", "reference")
def rotary_stack_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """Bytes of rotary tables built once per stack and saved (reference: none, per layer)."""
    return 0


@register("saved.eager_softmax", "reference")
def eager_softmax_saved(spec: ModelSpec, sh: Shapes, b: Any, entries: Any) -> Any:
    """Bytes eager attention's softmax saves beyond the probabilities (``entries`` per head
    and sequence): none, softmax saves its output, the probabilities probs @ v saves. With
    soft-capping (issue 22p, AttentionScores: ``tanh(scores / c) * c``) tanh saves its
    output [b, h, entries] (the divide and multiply by a Python scalar save nothing)."""
    return b * spec.n_heads * entries * sh.ib if spec.attn_softcap is not None else 0


@register("saved.eager_mask", "reference")
def eager_mask_saved(spec: ModelSpec, sh: Shapes, entries: Any, masked: bool) -> Any:
    """Bytes eager attention's mask saves per call: masked_fill(~ok) keeps the bool [s, s_k]
    it builds (reference_model/attention.py), ``entries`` of them; none when unmasked."""
    return entries if masked else 0


@register("saved.relative_bias", "reference")
def relative_bias_saved(spec: ModelSpec, sh: Shapes, stack: str, s: Any) -> tuple[Any, Any]:
    """(bytes per layer, under {stack}.layers.self_attn; bytes once, under {stack}.pos) the
    relative position bias saves: every layer's embedding(buckets) keeps the bucket ids."""
    st = sh.stack(stack)
    side = st.window if st.pattern == "chunked" else s  # chunked: one [c, c] bias for all
    return side * side * INDEX_BYTES, 0


@register("saved.token_type", "reference")
def token_type_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """Bytes the segment embedding saves: its ids [b, s] int64 (an input)."""
    return sh.b * s * INDEX_BYTES


@register("saved.cross_mask", "reference")
def cross_mask_saved(spec: ModelSpec, sh: Shapes, s: Any, s_src: Any) -> Any:
    """Bytes the cross-attentions of a stack save once between them (reference: none)."""
    return 0


@register("saved.positions", "reference")
def positions_saved(spec: ModelSpec, sh: Shapes, stack: str, s: Any) -> Any:
    """Bytes the stack's positional module saves when the stack calls it (learned only)."""
    if spec.position == "learned":
        return s * INDEX_BYTES  # position ids [s] (+ offset: a new tensor)
    return 0  # sinusoidal: a buffer lookup; rotary / relative: per layer (saved.rotary.layer)


@register("params.layer_shapes", "reference")
def layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...] | None:
    """One layer's parameter tensors in ``model.parameters()`` order where a class registers
    its own (estimator/terms/params.py); None: the reference model's order."""
    return None


@register("params.moe_layer_shapes", "reference")
def moe_layer_shapes(spec: ModelSpec) -> tuple[tuple[int, ...], ...] | None:
    """A mixture-of-experts layer's parameter tensors in ``model.parameters()`` order where a
    class registers its own (issue 22v: DeepSeek-V3); None: the attention's, then the MoE
    block's (rule ``params.moe_ffn_shapes``, issue 22e)."""
    return None


@register("saved.layer", "reference")
def layer_saved(spec: ModelSpec, sh: Shapes, t: dict[str, Any], n: Any) -> dict[str, Any]:
    """One layer's saved terms (estimator/terms/activations.layer_saved) where a class's
    layer wires its modules otherwise (a parallel block); the reference's: as they are, and
    with sandwich norms (issue 22p, reference_model/layers.py Layer.sublayer) the out norms
    on the attention's and the FFN's outputs (new tensors each) save a norm's set."""
    if spec.sublayer_norm != "sandwich":
        return t
    out = rule("saved.norm", spec, sh)(spec, sh, n)
    return {**t, "attn_out_norm": out, "ffn_out_norm": out}


@register("saved.qk_norm", "reference")
def qk_norm_saved(spec: ModelSpec, sh: Shapes, n_q: Any, n_k: Any) -> dict[str, Any]:
    """Norms on q and k after their projections (QK-norm, issue 22p: qk_norm='head',
    reference_model/attention.py Attention.project): q_norm over n_q tokens times h heads of
    d_h, k_norm over n_k tokens times h_kv heads; each saves a norm's set over those rows
    (``rows_norm_saved``), its input the projection's output, which nothing saved before."""
    if spec.qk_norm == "none":
        return {}
    d_h = spec.head_dim
    return {
        "q_norm": rows_norm_saved(spec, sh, n_q * spec.n_heads, d_h),
        "k_norm": rows_norm_saved(spec, sh, n_k * spec.n_kv_heads, d_h),
    }


def rows_norm_saved(spec: ModelSpec, sh: Shapes, rows: Any, width: int) -> Any:
    """``saved.norm``'s count over [rows, width]: LayerNorm its input, mean and rstd;
    RMSNorm (written out) x (pow, x * rms), x * rms (* weight) and rms [rows, 1]."""
    cb = sh.cb
    if spec.norm == "layernorm":
        stat = FP32_BYTES if sh.device == "cuda" else cb
        return rows * width * cb + 2 * rows * stat
    return 2 * rows * width * cb + rows * cb


@register("saved.norm", "reference")
def norm_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Bytes a norm over [n, d] saves: its input plus its statistics. LayerNorm's mean and
    rstd are fp32 on CUDA (the kernel's accumulate type) and in the input's dtype on CPU
    (measured: pure bf16 training saves them in bf16)."""
    cb, d = sh.cb, spec.d_model
    if spec.norm == "layernorm":
        stat = FP32_BYTES if sh.device == "cuda" else cb
        return n * d * cb + 2 * n * stat  # input; mean, rstd
    return 2 * n * d * cb + n * cb  # input (pow), x*rms (mul by weight); rms [n,1] (rsqrt)


@register("saved.loss", "reference")
def loss_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """F.cross_entropy over the [n, V] logits: log_softmax saves its output, nll_loss the
    targets (int64) and total_weight (a scalar), all in the logits' dtype."""
    return n * spec.vocab_size * sh.cb + n * INDEX_BYTES + sh.cb


@register("loss.upcast", "reference")
def loss_upcast(spec: ModelSpec) -> bool:
    """Whether the loss casts the logits to fp32 before cross_entropy: never here."""
    return False


@register("saved.eager_qkv", "reference")
def eager_qkv_saved(spec: ModelSpec, sh: Shapes, b: Any, s_q: Any, s_kv: Any) -> tuple[Any, Any]:
    """(Q and K, V) bytes the eager attention's two matmuls save: Q [b, h, s_q, d_h] and K,
    V repeated to h heads [b, h, s_kv, d_h] (copies made contiguous)."""
    h, d_h, cb = spec.n_heads, spec.head_dim, sh.ib  # what matmuls make (autocast: low)
    return (b * h * s_q * d_h + b * h * s_kv * d_h) * cb, b * h * s_kv * d_h * cb


@register("saved.ffn.gated", "reference")
def gated_ffn_saved(spec: ModelSpec, sh: Shapes, n: Any) -> dict[str, Any]:
    """act(gate(x)) * up(x) over n tokens (reference_model/layers.py FFN; transformers'
    LlamaMLP the same): the activation saves the gate output, the product act(gate) and up,
    one [n, d_ff] tensor each; what the activation saves is its own rule (``saved.ffn.act``:
    SiLU saves its input, a written-out activation several tensors)."""
    inner = n * spec.d_ff * sh.ib
    return {"ffn.act": rule("saved.ffn.act", spec, sh)(spec, sh, n), "ffn": 2 * inner}


@register("saved.final_softcap", "reference")
def final_softcap_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """The soft-capped logits (issue 22p, reference_model/model.py SoftCap): tanh saves its
    output [n, V] under ``final_softcap``."""
    return n * spec.vocab_size * sh.cb if spec.final_softcap is not None else 0
