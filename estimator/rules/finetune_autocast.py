"""LoRA under torch.autocast on CPU (issue 20): fp32 base weights, frozen, and fp32 adapters
(peft's ``autocast_adapter_dtype=True``), every matmul on low copies (the autocast lists of
estimator/rules/autocast.py: ``linear``, ``addmm``, ``mm``, ``matmul`` are on the CPU low list).

What autocast does to a wrapped linear, as peft runs it (peft/tuners/lora/layer.py
Linear.forward; GPT-2's Conv1D targets run the same path, fan_in_fan_out only transposes a
merge, peft/tuners/lora/layer.py Linear.get_delta_weight):

    result = base_layer(x)        # F.linear / torch.addmm on low casts of x and W
    x = _cast_input_dtype(x, fp32)  # a low x (o_proj's, down's input) gets an fp32 copy
    result = result + lora_B(lora_A(dropout(x))) * scaling

and what torch keeps of it (aten/src/ATen/autocast_mode.cpp ``cached_cast``: a cast is cached
for the autocast region only for an fp32 leaf that requires grad; MmBackward0 / AddmmBackward0
keep each operand only for the other's gradient, torch/csrc/autograd/generated
``should_compute_output``):
  base      W is frozen: its low copy is made anew per call, not cached, and saved as the
            second operand for the input's gradient, [d_out, d_in] low; x's low cast is
            saved by nothing (no weight gradient). Layer 0's q, k, v (no input gradient)
            save nothing: their weight copy is a transient.
  lora_A    x (fp32, after a dropout in fp32: the mask as estimator/rules/finetune.py) cast
            to low [n, d_in], saved for A's gradient; A's low copy [r, d_in], cached, saved
            for the input's gradient (not in layer 0's q, k, v: ``saved.lora_input_grad``)
  lora_B    its low input [n, r] and B's cached low copy [d_out, r]
  lm_head   frozen: its weight's low copy [V, d] is saved (its input needs a gradient)
The cast cache (freed when the autocast region ends, after the loss) then holds the adapters'
low copies, and no bias copy (the frozen biases are not leaves that require grad): layer 0's
q, k, v lora_A copies are the ones not saved as well (``live.lora_cast_cache``, what
estimator/rules/autocast.py's ``live.autocast_bias_casts`` counts under LoRA).
Measured: tests/tgauge/test_finetune_autocast.py.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.autocast import low_bytes
from estimator.rules.finetune import dropout_mask_bytes, lora_layer, lora_stack
from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec


@register("saved.lora@autocast", "reference")
def autocast_lora_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, d_out: int,
                        in_bytes: int) -> dict[str, Any]:  # fmt: skip
    """lora_A and lora_B's saved tensors under autocast (module docstring): lora_A its input's
    low cast, A's low copy (and the fp32 dropout mask), lora_B its low input and B's copy."""
    ft, low = sh.finetune, low_bytes(sh)
    lora_a = n * d_in * low + ft.rank * d_in * low
    if ft.dropout > 0:
        lora_a += dropout_mask_bytes(sh, n * d_in)
    return {"lora_A": lora_a, "lora_B": n * ft.rank * low + d_out * ft.rank * low}


@register("saved.lora_input_grad@autocast", "reference")
def autocast_lora_input_grad(spec: ModelSpec, sh: Shapes, n: Any, d_in: int) -> Any:
    """lora_A keeps A's low copy (and the dropout mask) only for its input's gradient."""
    mask = dropout_mask_bytes(sh, n * d_in) if sh.finetune.dropout > 0 else 0
    return sh.finetune.rank * d_in * low_bytes(sh) + mask


def base_weights(spec: ModelSpec) -> dict[str, int]:
    """[d_out, d_in] numel of each base linear of a decoder layer by term name (GPT-2's fused
    c_attn split over q_proj, k_proj, v_proj as the HF autocast rule splits its copy)."""
    d, q, kv, d_ff = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff
    out = {"self_attn.q_proj": q * d, "self_attn.k_proj": kv * d, "self_attn.v_proj": kv * d,
           "self_attn.o_proj": d * q, "ffn.up": d_ff * d, "ffn.down": d * d_ff}  # fmt: skip
    if spec.gated:
        out["ffn.gate"] = d_ff * d
    return out


@register("saved.frozen_layer@autocast", "reference")
def autocast_lora_layer(spec: ModelSpec, sh: Shapes, t: dict[str, Any], n: Any,
                        first: bool) -> dict:  # fmt: skip
    """One layer's saved set under autocast with LoRA: the fp32 rule (estimator/rules/
    finetune.py ``lora_layer``: no input saved by a frozen linear, as no lora_A here takes x
    itself), then each frozen base linear's low weight copy, except layer 0's q, k, v."""
    out = lora_layer(spec, sh, t, n, first)
    low = low_bytes(sh)
    for name, numel in base_weights(spec).items():
        if first and name.startswith("self_attn.") and not name.endswith("o_proj"):
            continue  # its input needs no gradient: nothing saved
        out[name] = out.get(name, 0) + numel * low
    return out


@register("saved.frozen_stack@autocast", "reference")
def autocast_lora_stack(spec: ModelSpec, sh: Shapes, t: dict[str, Any], stack: str,
                        n: Any) -> dict:  # fmt: skip
    """Stack-level terms under autocast with LoRA: the fp32 rule, and the frozen LM head's
    low weight copy [V, d] (F.linear's second operand, kept for its input's gradient)."""
    out = lora_stack(spec, sh, t, stack, n)
    if spec.lm_head:
        out["lm_head"] = spec.vocab_size * spec.d_model * low_bytes(sh)
    return out


@register("live.frozen_head_input@autocast", "reference")
def autocast_head_input(spec: ModelSpec, sh: Shapes) -> Any:
    """The fp32 head input is already among the loss moment's autocast terms (rule
    ``live.autocast_loss``: full training's lm_head saves only its low cast of it): 0."""
    return 0


@register("live.lora_cast_cache", "reference")
def cast_cache_bytes(spec: ModelSpec, sh: Shapes) -> int:
    """What the cast cache holds under LoRA that nothing saved: layer 0's q, k, v (qkv) lora_A
    copies [r, d]; the frozen biases are not cached (module docstring)."""
    ft = sh.finetune
    names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv")
    wrapped = sum(1 for t in ft.targets if t in names)
    return wrapped * ft.rank * spec.d_model * low_bytes(sh)
