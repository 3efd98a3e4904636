"""What autograd saves when ``finetune='freeze'`` freezes the parameters matching fnmatch
patterns over term names (issue 20; reference_model/lora.py apply_finetune sets
``requires_grad_(False)`` on them, transformers' modules the same way). Term names carry no
layer index, so a pattern freezes a module kind in every layer of its stack.

Exact when the embeddings train (every layer's input then needs a gradient, so a layer saves
for its input's gradient what full training saves): a frozen module saves only what its input's
gradient needs (torch/csrc/autograd/generated, ``should_compute_output``):

  linear    MmBackward0 keeps its input only for the weight's gradient: a frozen linear saves
            none; the input storage a group shares (q, k, v; gate, up) is still saved once when
            any linear of the group trains (``_GROUPS``), by the first trainable one
  norm      ``_norm_frozen`` (rules/finetune.py): RMSNorm's weight multiply keeps the
            normalized input only for the weight's gradient; LayerNorm saves the same either way
  stack     frozen embeddings keep no ids, a frozen position table no positions, a frozen LM
            head no input, a frozen final norm as ``_norm_frozen``

Exact too with frozen embeddings (and position table) when layer 0's attn_norm trains: its
output needs a gradient, so only that norm saves less (``saved.freeze_input_norm``), and what
nothing saves stays live at the loss (``live.freeze_held``). Otherwise (frozen embeddings and
attn_norm, other architectures, full checkpointing) the full-training saved set and backward
are counted, an upper bound (estimator/terms/finetune.py ``freeze_exact``). Measured:
tests/reference_model/test_ref_freeze.py, tests/profiler/test_prof_hf_freeze.py (HF Llama,
GPT-2: tgauge/peft_lora.py apply_freeze).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from estimator.rules.finetune import _norm_frozen
from estimator.rules.registry import register, rule
from estimator.shapes import Shapes
from estimator.spec.model import ModelSpec

#: parameter term name -> frozen (estimator/terms/finetune.py ``frozen_flags``; a name missing
#: is no parameter of the model): the terms compute it and pass it in, rules sit below terms
Frozen = Mapping[str, bool]

_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv"),
    ("self_attn.o_proj",),
    ("ffn.gate", "ffn.up"),
    ("ffn.down",),
)
_NORMS = ("attn_norm", "ffn_norm")


@register("saved.freeze_layer", "reference")
def freeze_layer(
    spec: ModelSpec, sh: Shapes, t: dict[str, Any], stack: str, n: Any, frozen: Frozen
) -> dict:
    """One layer's saved set (names relative to {stack}.layers) with frozen modules, the
    layer's input needing a gradient (module docstring)."""
    t = dict(t)
    pre = f"{stack}.layers."
    for group in _GROUPS:
        held = sum(t.pop(name, 0) for name in group)  # the group's input storage
        trainable = [g for g in group if frozen.get(pre + g) is False]
        for name in group:
            t[name] = 0
        if held and trainable:  # saved by the first trainable linear (GPT-2's c_attn: q_proj)
            key = trainable[0].replace(".qkv", ".q_proj")
            t[key] = t.get(key, 0) + held
    for norm in _NORMS:
        if norm in t and frozen.get(pre + norm):
            t[norm] -= _norm_frozen(spec, sh, n)
    return {k: v for k, v in t.items() if v}


@register("saved.freeze_stack", "reference")
def freeze_stack(
    spec: ModelSpec, sh: Shapes, t: dict[str, Any], stack: str, n: Any, frozen: Frozen
) -> dict:
    """Stack-level terms with frozen modules (module docstring)."""
    t = dict(t)
    for name in ("embed", f"{stack}.pos", "lm_head"):
        tied = name == "lm_head" and spec.tie_embeddings  # its weight is embed's
        if name in t and frozen.get("embed" if tied else name):
            t.pop(name)
    if f"{stack}.final_norm" in t and frozen.get(f"{stack}.final_norm"):
        t[f"{stack}.final_norm"] -= _norm_frozen(spec, sh, n)
    return t


@register("flops.freeze", "reference")
def freeze_flops(spec: ModelSpec, sh: Shapes, t: dict[str, Any], frozen: Frozen) -> dict:
    """A training step's FLOP terms with frozen linears (where ``freeze_exact``): a frozen
    linear's backward is its input's gradient alone, 1x its forward (MmBackward0 computes
    only the outputs that need grad), the LM head's too."""
    t = dict(t)
    for name in [k.removeprefix("forward.") for k in t if k.startswith("forward.")]:
        key = name.replace(".q_proj", ".qkv") if spec.fused_qkv else name
        linear = key.rsplit(".", 1)[-1] in ("qkv", "q_proj", "k_proj", "v_proj", "o_proj",
                                            "up", "gate", "down", "lm_head")  # fmt: skip
        if key == "lm_head" and spec.tie_embeddings:  # its weight is embed's
            key = "embed"
        if linear and f"backward.{name}" in t and frozen.get(key):
            t[f"backward.{name}"] = t[f"forward.{name}"]
    return t


@register("saved.freeze_input_norm", "reference")
def freeze_input_norm(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """A trainable norm over [n, d] whose input needs no gradient (layer 0's attn_norm under
    frozen embeddings): RMSNorm's rstd math records nothing, only ``weight * normalized``
    keeps the normalized input [n, d] (reference_model/norms.py RMSNorm); native_layer_norm
    keeps input, mean and rstd for the weight's gradient as for the input's (rule
    ``saved.norm``)."""
    if spec.norm == "rmsnorm":
        return n * spec.d_model * sh.cb
    return rule("saved.norm", spec, sh)(spec, sh, n)


@register("live.freeze_held", "reference")
def freeze_held(spec: ModelSpec, sh: Shapes, frozen: Frozen, input_norm: bool) -> Any:
    """Bytes live at the loss that nothing saves under freezing (reference_model/model.py
    Transformer.forward, as ``live.frozen_head_input`` under LoRA): the token embeddings
    [b, s, d] (the forward's local ``x``) when layer 0's attn_norm needs no input gradient and
    so keeps none of it (an RMSNorm; native_layer_norm keeps its input for the weight's
    gradient too); the head's input [b, s, d] when the head (a tied head: the
    embeddings) is frozen and so keeps none. ``input_norm``: layer 0's attn_norm trains over
    frozen embeddings (estimator/terms/finetune.py ``frozen_input_norm``)."""
    one = sh.b * sh.s_out * spec.d_model * sh.cb
    head = "embed" if spec.tie_embeddings else "lm_head"
    embeddings = input_norm and spec.norm == "rmsnorm"  # LayerNorm saves x
    return (one if embeddings else 0) + (one if frozen.get(head) else 0)


@register("live.freeze_held", "hf")
def hf_freeze_held(spec: ModelSpec, sh: Shapes, frozen: Frozen, input_norm: bool) -> Any:
    """transformers: the embeddings are the base model's local ``inputs_embeds``, gone with
    its forward before the loss; *ForCausalLM.forward keeps ``outputs.last_hidden_state``,
    the head's input, which a frozen head (a tied head: the embeddings) does not save
    (rules/finetune.py ``live.frozen_head_input`` hf)."""
    head = "embed" if spec.tie_embeddings else "lm_head"
    return sh.b * sh.s_out * spec.d_model * sh.cb if frozen.get(head) else 0
