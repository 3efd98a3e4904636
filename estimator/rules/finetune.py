"""What LoRA's own path saves for backward (rule ``saved.lora``), per wrapped linear, as peft's
``lora.Linear.forward`` runs it (peft/tuners/lora/layer.py Linear.forward):

    result = base_layer(x)
    x = self._cast_input_dtype(x, lora_A.weight.dtype)   # a new fp32 copy on a 16-bit base
    result = result + lora_B(lora_A(dropout(x))) * scaling
    result = result.to(torch_result_dtype)

  lora_A   its input: the cast copy [n, d_in] in the adapter dtype (none when x is already
           in it: x itself, whose storage an earlier module's term holds); with lora_dropout
           > 0 the dropout output [n, d_in] and native_dropout's mask (CPU: in the adapter
           dtype, CUDA: bool), the cast copy then saved by nothing
  lora_B   its input lora_A(x) [n, r] in the adapter dtype
``* scaling`` (a Python float) and the additions save nothing. Terms are named after the module
backward visits (``...self_attn.q_proj.lora_A``; GPT-2's fused c_attn under q_proj), so the
backward replay frees them with that linear (rules/reference/backward.py ``linear``).
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import register, rule
from estimator.shapes import Shapes, attention_pairs
from estimator.spec.dtypes import bits
from estimator.spec.model import ModelSpec
from estimator.sym import vmax


@register("saved.lora", "reference")
def lora_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, d_out: int,
               in_bytes: int) -> dict[str, Any]:  # fmt: skip
    """Bytes lora_A and lora_B save for one wrapped linear [d_in -> d_out] over n tokens
    whose input has ``in_bytes`` bytes per element (module docstring)."""
    ft = sh.finetune
    ab = bits(ft.adapter_dtype) // 8
    if ft.dropout > 0:
        lora_a = n * d_in * ab + dropout_mask_bytes(sh, n * d_in)
    else:
        lora_a = n * d_in * ab if ab != in_bytes else 0
    return {"lora_A": lora_a, "lora_B": n * ft.rank * ab}


def dropout_mask_bytes(sh: Shapes, numel: Any) -> Any:
    """lora_dropout's mask over ``numel`` entries of lora_A's input (cast to the adapter
    dtype): native_dropout's bool mask on CUDA; on CPU torch's _dropout_impl multiplies by a
    noise tensor in the input's dtype, which MulBackward0 keeps (aten/src/ATen/native/
    Dropout.cpp)."""
    return numel * (1 if sh.device == "cuda" else bits(sh.finetune.adapter_dtype) // 8)


@register("saved.lora_input_grad", "reference")
def lora_input_grad(spec: ModelSpec, sh: Shapes, n: Any, d_in: int) -> Any:
    """What lora_A's path saves only for its input's gradient, so not in layer 0's q, k, v
    (their input needs none): the dropout mask (MulBackward0 keeps the mask for the input's
    grad only, other = mask needing none; torch/csrc/autograd/generated should_compute_output)."""
    return dropout_mask_bytes(sh, n * d_in) if sh.finetune.dropout > 0 else 0


def _first_targeted(ft: Any, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` (forward order) that LoRA wraps, else None."""
    for name in names:
        if any(name == t or name.endswith("." + t) for t in ft.targets):
            return name
    return None


def _norm_frozen(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Bytes a frozen norm does not save: RMSNorm's weight multiply keeps the normalized
    input [n, d] only for the weight's gradient (reference_model/norms.py RMSNorm,
    transformers LlamaRMSNorm ``self.weight * hidden_states``); native_layer_norm saves its
    input, mean and rstd for the input's gradient either way (0)."""
    return n * spec.d_model * sh.cb if spec.norm == "rmsnorm" else 0


@register("saved.frozen_layer", "reference")
def lora_layer(spec: ModelSpec, sh: Shapes, t: dict[str, Any], n: Any, first: bool) -> dict:
    """One layer's saved set (names relative to {stack}.layers) when only LoRA adapters train:
    linears   a frozen base linear saves no input (MmBackward0 keeps its input only for the
              weight's gradient: torch/csrc/autograd/generated, should_compute_output); the
              input storage a group of linears shared (q, k, v; gate, up) or o_proj's and
              down's own input is then saved by the first wrapped linear's lora_A when lora_A
              takes x itself (adapter dtype = input dtype, no lora_dropout), else by nobody
    norms     as ``_norm_frozen``
    first     layer 0 (``first``): nothing before the first adapter needs a gradient (the
              embeddings are frozen): attn_norm saves nothing; Q K^T keeps Q only for K's
              gradient and K only for Q's, so an unwrapped k (q) drops Q (K), an unwrapped
              v the probabilities' own copy (``_probs_copy``); q, k, v's
              lora_A keeps nothing for its input's gradient (``saved.lora_input_grad``)
    """
    ft = sh.finetune
    t = dict(t)
    shares_x = ft.dropout == 0 and bits(ft.adapter_dtype) // 8 == sh.ib
    groups = [
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv"),
        ("self_attn.o_proj",),
        ("ffn.gate", "ffn.up"),
        ("ffn.down",),
    ]
    for group in groups:
        held = sum(t.pop(name, 0) for name in group)  # the group's input storage, if any
        for name in group:
            t[name] = 0
        wrapped = _first_targeted(ft, group)
        if wrapped and shares_x:
            key = wrapped.replace(".qkv", ".q_proj") + ".lora_A"
            t[key] = t.get(key, 0) + held
    for norm in ("attn_norm", "ffn_norm", "cross_norm"):
        if norm in t:
            t[norm] -= _norm_frozen(spec, sh, n)
    if first:
        t["attn_norm"] = 0
        no_grad = rule("saved.lora_input_grad", spec, sh)(spec, sh, n, spec.d_model)
        for name in _LAYER0_NO_GRAD_INPUT + ("self_attn.qkv",):
            key = name.replace(".qkv", ".q_proj") + ".lora_A"
            if _first_targeted(ft, (name,)) and key in t:
                t[key] -= no_grad  # its input needs no gradient
        grads = {x: _first_targeted(ft, (f"self_attn.{x}_proj", "self_attn.qkv")) for x in "qk"}
        one = n * spec.n_heads * spec.head_dim * sh.ib  # Q, or K repeated to h heads
        if "self_attn.scores" in t:
            t["self_attn.scores"] -= (0 if grads["k"] else one) + (0 if grads["q"] else one)
            if not _first_targeted(ft, ("self_attn.v_proj", "self_attn.qkv")):
                t["self_attn.scores"] -= _probs_copy(spec, sh)
        if spec.position == "rotary" and "self_attn" in t:  # x * cos, rot(x) * sin keep cos
            # and sin only for an x that needs grad: per call, half for q, half for k
            # (reference_model/positions.py; HF's per-layer share is 0, rules/hf/decoders.py)
            half = rule("saved.rotary.layer", spec, sh)(spec, sh, sh.s_dec) // 2  # decoder-only
            t["self_attn"] -= (0 if grads["q"] else half) + (0 if grads["k"] else half)
    return {k: v for k, v in t.items() if v}


def _probs_copy(spec: ModelSpec, sh: Shapes) -> Any:
    """Bytes of the probabilities probs @ V saves as a copy of its own, the softmax having
    saved its fp32 output apart (rule ``saved.eager_softmax`` nonzero: HF's eager_attention_
    forward ``softmax(..., dtype=float32).to(query.dtype)`` in bf16 or under autocast): kept
    only for V's gradient, so not in layer 0 when v is not wrapped (else 0)."""
    if not rule("saved.eager_softmax", spec, sh)(spec, sh, 1, 1):  # per entry: none apart
        return 0
    st = sh.stack("decoder")
    entries = attention_pairs(st.pattern, st.window, False, sh.s_dec, "full")
    return sh.b * spec.n_heads * entries * sh.ib


@register("saved.frozen_stack", "reference")
def lora_stack(spec: ModelSpec, sh: Shapes, t: dict[str, Any], stack: str, n: Any) -> dict:
    """Stack-level terms when only LoRA adapters train: the frozen embeddings keep no ids
    (embedding_dense_backward is the weight's gradient), the frozen LM head no input, the
    final norm as ``_norm_frozen``."""
    t = dict(t)
    for name in ("embed", f"{stack}.pos", "lm_head"):
        t.pop(name, None)
    if f"{stack}.final_norm" in t:
        t[f"{stack}.final_norm"] -= _norm_frozen(spec, sh, n)
    return t


@register("live.frozen_head_input", "reference")
def reference_head_input(spec: ModelSpec, sh: Shapes) -> Any:
    """Bytes live at the loss that nothing saves once the base is frozen, in the reference
    model (reference_model/model.py Transformer.forward, measured: tests/reference_model/
    test_ref_lora.py): the head's input h [b, s, d] (the final norm's output, kept as
    ``ModelOutput.hidden_states``; a frozen lm_head saves none of it); the token embeddings
    [b, s, d] (the forward's local ``x``: a frozen embedding and layer 0's norm, which needs
    no gradient, save none of it); the loss itself (0-dim, logits dtype)."""
    n = sh.b * sh.s_out
    return 2 * n * spec.d_model * sh.cb + sh.cb


@register("live.frozen_head_input", "hf")
def hf_head_input(spec: ModelSpec, sh: Shapes) -> Any:
    """transformers' *ForCausalLM.forward keeps ``outputs.last_hidden_state`` [b, s, d] (the
    final norm's output, the head's input) while it computes the logits and the loss: with a
    frozen head nothing saves it, so it counts at the loss apart from the activations
    (LlamaForCausalLM.forward, GPT2LMHeadModel.forward)."""
    return sh.b * sh.s_out * spec.d_model * sh.cb


def dequant_bytes(spec: ModelSpec, sh: Shapes, name: str) -> tuple[Any, Any]:
    """QLoRA: the [d_out, d_in] weight bitsandbytes dequantizes, in the compute dtype, while
    a 4-bit linear runs: MatMul4Bit.backward's ``dequantize_4bit(B).to(dtype).t()`` for the
    input's gradient (bitsandbytes/autograd/_functions.py), and forward's gemm_4bit, which for
    a training batch falls back to dequantize + F.linear (backends/cuda/ops.py
    _dequant_linear_fallback, backends/default/ops.py _gemm_4bit_default_impl); with double
    quantization also the fp32 absmax it restores first (freed once the weight is out).
    -> (weight bytes, absmax bytes), 0 for a linear that is not 4-bit. GPT-2's fused c_attn is
    one weight, counted at q_proj. Measured: tests/estimator/terms/test_quant_bnb.py."""
    shape = _shape_4bit(spec, sh, name)
    if shape is None:
        return 0, 0
    d_out, d_in = shape
    numel = d_out * d_in
    absmax = -(-numel // 64) * 4 if sh.finetune.double_quant and numel else 0
    return numel * _cq(sh), absmax


def _shape_4bit(spec: ModelSpec, sh: Shapes, name: str) -> tuple[Any, Any] | None:
    """[d_out, d_in] of the 4-bit linear ``name`` under QLoRA, None for any other."""
    if sh.finetune.kind != "qlora" or ".layers." not in name:
        return None
    d, d_ff, q, kv = spec.d_model, spec.d_ff, spec.q_dim, spec.kv_dim
    shapes = {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q),
              "ffn.up": (d_ff, d), "ffn.gate": (d_ff, d), "ffn.down": (d, d_ff)}  # fmt: skip
    if spec.fused_qkv:
        shapes |= {"q_proj": (q + 2 * kv, d), "k_proj": (0, d), "v_proj": (0, d)}
    key = next((k for k in shapes if name.endswith("." + k)), None)
    return None if key is None else shapes[key]


def _cq(sh: Shapes) -> int:
    """Bytes per element of what a 4-bit linear computes in (bnb_4bit_compute_dtype): the
    compute dtype, or after prepare_model_for_kbit_training the weight dtype the model had
    (its activations run in fp32)."""
    return bits(sh.finetune.kbit_dtype) // 8 if sh.finetune.kbit_prep else sh.cb


def kbit_casts(sh: Shapes, name: str, n: Any, d_in: Any, d_out: Any) -> tuple[Any, Any]:
    """After prepare_model_for_kbit_training an fp32 input reaches each 4-bit linear:
    Linear4bit.forward (bitsandbytes/nn/modules.py) runs ``x = x.to(self.compute_dtype)``
    and returns ``matmul_4bit(x, ...).to(inp_dtype)``, so beside the fp32 output [n, d_out]
    live the input's copy [n, d_in] and the output [n, d_out] in the 4-bit compute dtype
    until it returns; backward their ToCopyBackward0 nodes make the same two in that dtype.
    -> (input copy bytes, output bytes), 0 where nothing is cast (no kbit_prep, a 16-bit
    linear, an fp32 model)."""
    if not sh.finetune.kbit_prep or sh.finetune.kind != "qlora" or ".layers." not in name:
        return 0, 0
    cq = _cq(sh)
    if cq == sh.cb:
        return 0, 0
    return n * d_in * cq, n * d_out * cq


def kbit_backward_casts(spec: ModelSpec, sh: Shapes, name: str) -> tuple[Any, Any]:
    """``kbit_casts`` of the 4-bit linear ``name`` over the step's b * s_dec tokens, in
    backward: (the grad input's compute-dtype copy, the grad output's)."""
    shape = _shape_4bit(spec, sh, name)
    if shape is None or not shape[0]:
        return 0, 0
    return kbit_casts(sh, name, sh.b * sh.s_dec, shape[1], shape[0])


_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "ffn.up", "ffn.gate", "ffn.down")  # fmt: skip
_LAYER0_NO_GRAD_INPUT = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


@register("flops.frozen", "reference")
def lora_flops(spec: ModelSpec, sh: Shapes, t: dict[str, Any], adapters: tuple) -> dict:
    """A training step's FLOP terms when only LoRA adapters train (decoder-only): a frozen
    linear's backward is its input's gradient alone (1x forward, no dW: MmBackward0 computes
    only the outputs that need grad); in layer 0 q, k, v's inputs need none (0); Q K^T's
    backward makes dQ only where k needs grad and dK only where q does, probs @ V's dV only
    where v does (eager); the frozen LM head
    1x. ``adapters``: (name relative to decoder.layers, d_in, d_out) per wrapped linear: lora_A
    [n, d_in] @ [d_in, r] and lora_B [n, r] @ [r, d_out] forward, each dW and dX backward (layer
    0's q, k, v lora_A no dX), recomputed under checkpointing."""
    ft, L, n = sh.finetune, spec.n_decoder_layers, sh.b * sh.s_dec
    t = dict(t)
    lay = "decoder.layers."
    # prepare_model_for_kbit_training's input-grad hook (FinetuneShapes.input_grad): the
    # embeddings' output requires grad, so layer 0 runs every input gradient as the others
    no_grad_input = () if ft.input_grad else _LAYER0_NO_GRAD_INPUT
    for name in _LINEARS:
        fwd = t.get(f"forward.{lay}{name}", 0)
        if fwd:
            first = 0 if name in no_grad_input else fwd // L
            t[f"backward.{lay}{name}"] = fwd - fwd // L + first
    if "forward.lm_head" in t:
        t["backward.lm_head"] = t["forward.lm_head"]
    q_grad = ft.input_grad or any(x in ft.targets for x in ("self_attn.q_proj", "self_attn.qkv"))
    k_grad = ft.input_grad or any(x in ft.targets for x in ("self_attn.k_proj", "self_attn.qkv"))
    one = t.get(f"forward.{lay}self_attn.scores", 0) // L  # one layer's Q K^T
    v_grad = ft.input_grad or any(x in ft.targets for x in ("self_attn.v_proj", "self_attn.qkv"))
    if one:  # eager; probs @ V makes dV only where v needs grad
        t[f"backward.{lay}self_attn.scores"] -= (0 if k_grad else one) + (0 if q_grad else one)
        t[f"backward.{lay}self_attn.mix"] -= 0 if v_grad else one
    for name, d_in, d_out in adapters:
        a, b_ = 2 * n * d_in * ft.rank, 2 * n * ft.rank * d_out  # per layer
        no_dx = name in no_grad_input
        for part, fwd, bwd in (("lora_A", a, 2 * a * L - (a if no_dx else 0)),
                               ("lora_B", b_, 2 * b_ * L)):  # fmt: skip
            t[f"forward.{lay}{name}.{part}"] = L * fwd
            t[f"backward.{lay}{name}.{part}"] = bwd
            if sh.checkpointing == "full":
                t[f"recompute.{lay}{name}.{part}"] = L * fwd
    return t


def lora_ffn_moment(spec: ModelSpec, sh: Shapes, acts: dict[str, Any]) -> Any | None:
    """Bytes beyond the states and ``train.held`` live at the highest moment of the last
    layer's FFN with a frozen base (None: not modelled, checkpointing or not a decoder-only
    model), the larger of two (``acts``: activation terms by name, no ``activations.``):
    down   inside ffn.down, at its base matmul or, wrapped, at its LoRA path's
           ``lora_B(...) * scaling`` (peft/tuners/lora/layer.py Linear.forward): every
           activation saved so far (all but down's lora_B, the final norm, the LM head and
           the loss), and
             ffn_in  the FFN's input [n, d] (ffn_norm's output), held by the layer's forward,
                     saved by nobody unless gate's or up's lora_A takes it itself
             x       down's input [n, d_ff], held by the FFN's forward, saved by nobody (a
                     frozen base keeps no input) unless down's lora_A takes x itself
             result  the base output [n, d]
           wrapped, also: ``_cast_input_dtype``'s adapter-dtype copy of a lower-precision x
           [n, d_ff]; lora_B's output and the scaled one [n, d] (the matmuls' dtype) -- or,
           under autocast with lora_dropout, earlier at lora_A: the dropout's fp32 output
           [n, d_ff] (the larger); after prepare_model_for_kbit_training the 4-bit base's
           compute-dtype copies at its ``.to`` (``kbit_casts``), before that path
    up     wrapped, at its ``* scaling``: everything saved before up's lora_B (not the
           activation's and gated product's saves, nor down's), ffn_in, a gated FFN's
           activation output [n, d_ff] (saved by the product only later), the base output,
           lora_B's and the scaled [n, d_ff], the cast copy of x [n, d] (or, under autocast
           with lora_dropout, the dropout's output [n, d])"""
    ft = sh.finetune
    if sh.checkpointing != "none" or spec.arch != "decoder":
        return None
    n, d, d_ff, ib = sh.b * sh.s_dec, spec.d_model, spec.d_ff, sh.ib
    ab = bits(ft.adapter_dtype) // 8
    lb = ib if sh.autocast else ab  # lora_B's output: the matmul's dtype
    shares_x = ft.dropout == 0 and ab == ib
    ffn_in = (
        0 if any(t in ft.targets for t in ("ffn.gate", "ffn.up")) and shares_x else n * d * sh.cb
    )
    head = sum(acts.get(k, 0) for k in ("decoder.final_norm", "lm_head", "loss"))

    def path(d_in: int, d_out: int) -> Any:  # a wrapped linear's own transients
        drop_out = n * d_in * ab if sh.autocast and ft.dropout > 0 else 0
        return (n * d_in * ab if ab != ib else 0) + vmax(2 * n * d_out * lb, drop_out)

    down_wrapped = "ffn.down" in ft.targets
    live = sum(acts.values()) - head - _last(spec, acts, ("ffn.down.lora_B",))
    down = live + ffn_in + n * d * ib + (0 if down_wrapped and shares_x else n * d_ff * ib)
    # a 4-bit down after prepare_model_for_kbit_training: first, at its base's ``.to``, the
    # compute-dtype copies (``kbit_casts``); wrapped, its LoRA path after them
    casts = sum(kbit_casts(sh, "decoder.layers.ffn.down", n, d_ff, d))
    down += vmax(path(d_ff, d), casts) if down_wrapped else casts
    if "ffn.up" not in ft.targets:
        return down
    later = ("ffn.act", "ffn", "ffn.down", "ffn.down.lora_A", "ffn.down.lora_B", "ffn.up.lora_B")
    if spec.gated:
        later = later[1:]  # act_fn(gate_proj(x)) runs before up_proj(x)
    up = sum(acts.values()) - head - _last(spec, acts, later) + ffn_in
    casts = sum(kbit_casts(sh, "decoder.layers.ffn.up", n, d, d_ff))
    up += (n * d_ff * ib if spec.gated else 0) + n * d_ff * ib + vmax(path(d, d_ff), casts)
    return vmax(down, up)


def _last(spec: ModelSpec, acts: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The last decoder layer's share of the per-layer terms ``names``."""
    L = spec.n_decoder_layers
    return sum(acts.get(f"decoder.layers.{k}", 0) // L for k in names)
