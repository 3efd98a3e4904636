"""The Hugging Face implementation's rules for the decoder-only families (GPT-2, Llama,
Mistral; transformers 5.x), registered per module kind in estimator/rules/registry.py; their
forward replay is in decoders_pass.py. Each rule names the code it mirrors; measured against
the real classes in tests/tgauge/test_hf_rules_decoders.py (CPU, fp32, eager and sdpa, two
(b, s) points).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.hf.activations import BACKWARDS, written_out_backward
from estimator.rules.hf.common import buffer_dtype
from estimator.rules.reference.backward import Walker
from estimator.rules.reference.backward import act_backward as reference_act_backward
from estimator.rules.reference.saved import eager_qkv_saved as reference_eager_qkv
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.hf_keys import ACT_SAVES
from estimator.spec.model import ModelSpec
from estimator.sym import vmin

FP32_BYTES = 4
#: activations.py ACT2FN functions -> the [n, d_ff] tensors their autograd nodes save, derived
#: from each definition (estimator/spec/hf_keys.ACT_SAVES). NewGELUActivation (gelu_new):
#: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3)))): pow saves x, tanh its
#: output, the last mul both factors (0.5 * x and 1 + tanh); the scalar muls and adds nothing
WRITTEN_OUT_SAVES = ACT_SAVES
#: activations whose graph is gelu_new's op for op (the backward rule below)
GELU_NEW_GRAPH = frozenset({"gelu_new", "gelu_accurate"})


def builds_cache(sh: Shapes) -> bool:
    """Whether a training forward builds a DynamicCache: ``use_cache``, default the model's
    (``config.use_cache``, True for transformers' decoder LMs); never under gradient
    checkpointing (issue 20c: modeling_layers.py GradientCheckpointingLayer sets
    ``use_cache=False`` and drops the cache; GPT2Model.forward passes the blocks
    ``cache if not (self.gradient_checkpointing and self.training) else None``)."""
    return sh.use_cache is not False and sh.checkpointing != "full"


@register("saved.ffn.act", "hf")
def ffn_act_saved(spec: ModelSpec, sh: Shapes, n: Any, width: Any = None) -> Any:
    """transformers/activations.py: a written-out activation (``WRITTEN_OUT_SAVES``) saves
    several [n, d_ff] tensors (``width``: [n, width], BERT's MLM head runs ACT2FN[hidden_act]
    on [n, d]); the torch functional ones (F.gelu, F.silu) save their input."""
    width = spec.d_ff if width is None else width
    return WRITTEN_OUT_SAVES.get(spec.activation_fn or "", 1) * n * width * sh.cb


def sdpa_gets_mask(s_k: Any, fused_mask: bool, window: int | None) -> bool:
    """masking_utils._ignore_causal_mask_sdpa: a plain causal mask is skipped (sdpa's
    is_causal); a sliding window is passed as a mask once the keys reach the window."""
    return fused_mask and window is not None and s_k >= window


def repeat_kv_views(spec: ModelSpec, sh: Shapes) -> bool:
    """Whether repeat_kv (integrations/sdpa_attention.py, models/llama/modeling_llama.py)
    returns a view: it expands k [b, h_kv, s, d_h] to [b, h_kv, n_rep, s, d_h] (stride 0 on
    n_rep) and reshapes to [b, h, s, d_h]; with one KV head the size-1 h_kv dimension merges
    with the stride-0 one, so the reshape is a view of k's storage (h_kv > 1: a copy).
    Autocast casts that view to the low dtype first (a dense copy of h heads): not a view."""
    return spec.n_kv_heads == 1 < spec.n_heads and not sh.autocast


def sdpa_saved_entries(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any,
                       fused_mask: bool, window: int | None) -> Any:  # fmt: skip
    """Entries of what sdpa_attention_forward saves in the input dtype (``sdpa_saved``):
    q (with k, v if they are views of a fused projection), k, v, out and the float mask."""
    h, h_kv, d_h = spec.n_heads, spec.n_kv_heads, spec.head_dim
    mask = sdpa_gets_mask(s_k, fused_mask, window)
    q = b * s * (h + 2 * h_kv if spec.fused_qkv else h) * d_h
    if mask and h_kv < h and not repeat_kv_views(spec, sh):
        kv = 2 * b * h * s_k * d_h  # repeat_kv: expand + reshape, a copy each
    elif spec.fused_qkv and not builds_cache(sh):
        kv = 0  # views of the projection's output, counted with q
    else:
        kv = 2 * b * h_kv * s_k * d_h
    return q + kv + b * s * h * d_h + (b * s * s_k if mask else 0)


@register("sdpa.math", "hf")
def hf_math_sdpa(sh: Shapes) -> bool:
    """Whether fused attention runs the math sdpa for the reference's reason (issue 22f:
    estimator/rules/reference/saved.py math_sdpa, CPU training with dropout): not modelled for
    Hugging Face models, which keep their flash rules (T5: its own ``backward.flash``)."""
    return False


@register("saved.sdpa", "hf")
def sdpa_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any, masked: bool,
               fused_mask: bool, window: int | None, cross: bool) -> dict[str, Any]:  # fmt: skip
    """integrations/sdpa_attention.py sdpa_attention_forward on CPU flash: saves q, k, v, out
    and the fp32 logsumexp [b, h, s]. With a mask, use_gqa_in_sdpa is False: repeat_kv copies
    k and v to h heads, and the bool mask [b, 1, s, s_k] is converted to an additive one that
    is saved. A fused projection (GPT-2's c_attn) leaves q a view of the whole [n, (h + 2 h_kv)
    d_h] output; a training forward that builds a DynamicCache gives sdpa the cache's
    torch.cat copies of k and v (cache_utils.DynamicLayer.update), else k and v are views of
    that same output. One KV head: repeat_kv's output is a view (``repeat_kv_views``), and
    the flash kernel saves it, k's own storage [b, 1, s_k, d_h]."""
    entries = sdpa_saved_entries(spec, sh, b, s, s_k, fused_mask, window)
    lse = b * spec.n_heads * s * FP32_BYTES
    return {"sdpa": entries * sh.cb + lse, "o_proj": 0}


@register("saved.eager_qkv", "hf")
def eager_qkv_saved(spec: ModelSpec, sh: Shapes, b: Any, s_q: Any, s_kv: Any) -> tuple[Any, Any]:
    """eager_attention_forward's ``torch.matmul(query, key.transpose(2, 3))`` and
    ``torch.matmul(attn_weights, value)`` fold [b, h, s, d_h] into [b * h, s, d_h]: a copy
    when the heads of a split, transposed projection cannot merge with the batch, a view
    when b is 1 (a size-1 dimension merges with any stride). GPT-2's fused c_attn at b = 1:
    q is a view of the whole [s, (h + 2 h_kv) d_h] output, k and v views of it too, or the
    DynamicCache's torch.cat copies when a training forward builds one (``builds_cache``),
    themselves viewed; the same with one head (h = 1 merges with any batch stride). Other
    classes, b > 1 with h > 1: the reference's copies. One KV head at b = 1: repeat_kv's
    view (``repeat_kv_views``, stride 0 over the heads) folds into [h, d_h, s_kv] as a view
    too, so the matmuls save k's and v's own storages [1, 1, s_kv, d_h] (b > 1: the fold of
    b with the stride-0 heads copies, as the reference)."""
    if repeat_kv_views(spec, sh) and b == 1 and not spec.fused_qkv:
        q = b * spec.n_heads * s_q * spec.head_dim  # q (its storage or its copy: as many)
        kv = b * s_kv * spec.head_dim
        return (q + kv) * sh.ib, kv * sh.ib
    if not (spec.fused_qkv and (b == 1 or spec.n_heads == 1)):
        return reference_eager_qkv(spec, sh, b, s_q, s_kv)
    h, h_kv, d_h, cb = spec.n_heads, spec.n_kv_heads, spec.head_dim, sh.ib
    base = b * s_q * (h + 2 * h_kv) * d_h * cb  # c_attn's output, q's storage
    kv = b * h_kv * s_kv * d_h * cb if builds_cache(sh) else 0
    return base + kv, kv


#: classes whose rotary embedding registers inv_freq and original_inv_freq (its clone)
ROTARY_BUFFERS = ("LlamaForCausalLM", "MistralForCausalLM")


@register("memory.buffers", *ROTARY_BUFFERS)
def rotary_buffers(spec: ModelSpec, sh: Shapes) -> Any:
    """LlamaRotaryEmbedding.__init__ (MistralRotaryEmbedding the same): ``inv_freq`` and
    ``original_inv_freq = inv_freq.clone()``, [ceil(d_h / 2)] fp32 at init, cast with the
    weights by model.to(dtype)."""
    dim = spec.rotary_dim or spec.head_dim
    return 2 * nbytes((dim + 1) // 2, buffer_dtype(sh))


@register("saved.rotary.layer", "hf")
def rotary_layer_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """apply_rotary_pos_emb multiplies by the cos and sin the model computed once: the layers
    save the same two storages (``rotary_stack_saved``), nothing of their own."""
    return 0


@register("saved.rotary.stack", "hf")
def rotary_stack_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Any:
    """LlamaRotaryEmbedding.forward runs once per model forward on position_ids [1, s]: cos
    and sin [1, s, d_h] (the batch axis 1), saved by the first layer's q * cos, rot(q) * sin.
    Partial rotary (Phi3RotaryEmbedding, GPTNeoXRotaryEmbedding: ``spec.rotary_dim``): cos and
    sin hold the rotated dims only."""
    return 2 * s * (spec.rotary_dim or spec.head_dim) * sh.cb


@register("kv.positions", "hf")
def kv_positions(pattern: str, window: int | None, seen: Any, new: Any) -> Any:
    """Positions whose storage the cache holds after a pass of ``new`` tokens brought it to
    ``seen``. cache_utils.DynamicSlidingWindowLayer.update keeps a [-(w - 1):] view of
    torch.cat(past, new): the whole cat stays allocated, min(seen - new, w - 1) + new
    positions (a prefill longer than the window keeps all of it until the next step).
    Other patterns: DynamicLayer's cat holds every position."""
    if pattern == "sliding_window":
        return vmin(seen - new, window - 1) + new
    return seen


@register("backward.ffn.act", "hf")
def act_backward(bw: Walker, name: str, inner: Any, d_out: Any) -> Any:
    """Backward of a written-out activation (``WRITTEN_OUT_SAVES``), else the reference's.
    gelu_new, as the live tracker reads autograd's nodes (F = ``inner``, from the output's
    grad ``d_out``): MulBackward0 of 0.5 x * (1 + tanh) makes a grad per factor (+2 F, the
    highest reading), frees both factors and d_out; TanhBackward0 (+F) frees tanh's output;
    the scalar muls replace their input; PowBackward0's pow, * 3 and * grad (+2 F again);
    the three grads of x summed into one (-> F), x freed."""
    fn = bw.spec.activation_fn or ""
    if fn not in GELU_NEW_GRAPH:
        saves = WRITTEN_OUT_SAVES.get(fn, 1)
        if fn in BACKWARDS:  # gelu_python
            return BACKWARDS[fn](bw, name, inner, d_out)
        if saves > 1:  # gelu_fast, gelu_python_tanh, quick_gelu
            return written_out_backward(bw, name, inner, d_out, saves)
        return reference_act_backward(bw, name, inner, d_out)
    live, F = bw.live, inner
    live.take(F, F)  # grad * (1 + tanh), grad * 0.5 x
    live.drop(d_out)
    bw.free(name, 2 * F)  # 0.5 x, 1 + tanh
    live.take(F)  # tanh_backward
    bw.free(name, F)  # tanh's output
    live.drop(F)  # the grad of 1 + tanh
    live.take(F)  # * sqrt(2 / pi)
    live.take(F)  # * 0.044715 (the branch through pow)
    live.drop(F)
    live.take(F, F, F)  # pow_backward: x ** 2, * 3, * grad
    bw.free(name)  # x
    live.drop(3 * F)
    live.take(F)  # the grads of x summed
    live.drop(3 * F)
    return F


def cache_copies_unsaved(spec: ModelSpec, sh: Shapes, window: int | None) -> bool:
    """Whether attention works on copies of the cache's keys and values (so autograd does
    not keep the cache's own storages): repeat_kv's under GQA when the kernel gets h heads
    (eager; sdpa with a mask, see ``sdpa_saved``), unless one KV head makes them views
    (``repeat_kv_views``; eager's matmul folds them into a view at b = 1 only)."""
    if spec.n_kv_heads == spec.n_heads:
        return False  # eager's matmul and sdpa take the cache's tensors themselves
    views = repeat_kv_views(spec, sh)
    if sh.attention_impl == "eager":
        return not (views and sh.b == 1)
    return not views and window is not None and sh.s >= window  # sdpa_gets_mask


@register("live.loss_moment", "hf")
def loss_moment_extra(spec: ModelSpec, sh: Shapes) -> Any:
    """Bytes live at the loss beyond the states, the saved tensors and the logits.
    loss_utils.ForCausalLMLoss pads the labels by one (nn.functional.pad -> [b, s + 1]
    int64) before shifting them (the shifted copy is the saved target). The model output
    holds the DynamicCache a training forward builds (``builds_cache``): the torch.cat
    copies of k and v [b, h_kv, s, d_h] per layer, extra where attention saved other
    copies (``cache_copies_unsaved``); a sliding-window layer keeps a view of the whole cat."""
    if not spec.lm_head or spec.arch != "decoder":
        return 0
    b, s, cb = sh.b, sh.s, sh.cb
    extra = padded_labels_bytes(sh)
    if cb != FP32_BYTES:  # ForCausalLMLoss's logits.float(): an fp32 copy while the loss runs
        extra += b * sh.s_out * spec.vocab_size * FP32_BYTES
    if builds_cache(sh) and cache_copies_unsaved(spec, sh, sliding_window(sh)):
        extra += spec.n_decoder_layers * 2 * b * spec.n_kv_heads * s * spec.head_dim * cb
    return extra


def padded_labels_bytes(sh: Shapes) -> Any:
    """loss_utils.ForCausalLMLoss's nn.functional.pad of the labels: [b, s + 1] int64; at
    b = 1 the saved target is a view of it, counted there (rule ``saved.loss``)."""
    return 0 if sh.b == 1 else sh.b * (sh.s + 1) * INDEX_BYTES


def sliding_window(sh: Shapes) -> int | None:
    """The decoder's window when its pattern is a sliding window (Mistral), else None."""
    st = sh.stack("decoder")
    return st.window if st.pattern == "sliding_window" else None
