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

from estimator.rules.registry import register
from estimator.shapes import Shapes
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
    a copy when b > 1 (b and h do not merge), a view at b = 1, where the bmm then keeps
    kv_b_proj's whole output."""
    h, d_v, d_nope, cb = spec.n_heads, spec.v_head_dim, spec.qk_nope_head_dim, sh.cb
    if b == 1:
        return s_k * h * (d_nope + d_v) * cb
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
      o_proj     its input [n, h d_v]: the merged heads' reshape copy (fused without
                 padding: a view of the saved out, 0)"""
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
    t["o_proj"] = n * h * d_v * cb if padded else 0
    return t
