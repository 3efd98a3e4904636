"""What a training step trains (issue 20): the whole model, all but some frozen modules, or
LoRA adapters on a frozen 16-bit (``lora``) or 4-bit bitsandbytes (``qlora``) base.

``resolve_finetune(spec, workload)`` answers it once per estimate (estimator/shapes.py keeps the
answer as ``Shapes.finetune``): the base modules LoRA wraps, by glossary name, and the dtype of
the adapters. peft's defaults, as peft 0.21 has them:
  rank r = 8, lora_alpha = 8, lora_dropout = 0.0, bias = "none"     peft/tuners/lora/config.py
                                                                    LoraConfig (r, lora_alpha,
                                                                    lora_dropout, bias)
  target modules: q and v (``["q_proj", "v_proj"]`` for llama, mistral, bart, ...; query and
  value for bert, vit; q and v for t5), GPT-2's fused ``c_attn``    peft/utils/constants.py
                                                                    TRANSFORMERS_MODELS_TO_LORA_
                                                                    TARGET_MODULES_MAPPING
  adapters in fp32 on a 16-bit base: get_peft_model(..., autocast_adapter_dtype=True) upcasts
  fp16 / bf16 adapter weights to fp32            peft/mapping_func.py get_peft_model,
                                                 peft/tuners/tuners_utils.py cast_adapter_dtype
  scaling = lora_alpha / r (use_rslora=False)    peft/tuners/lora/layer.py LoraLayer.update_layer
  prepare_model_for_kbit_training (``kbit_prep``, peft/utils/other.py): every parameter of
  dtype fp16 / bf16 that is not a ``Params4bit`` gets ``param.data.to(torch.float32)``
  (embeddings, norms, LM head, the 4-bit linears' biases); with use_gradient_checkpointing
  (default True) ``model.enable_input_require_grads()`` (transformers/modeling_utils.py: a
  forward hook ``output.requires_grad_(True)`` on the input embeddings) and
  ``gradient_checkpointing_enable``
Targets are short names (q, k, v, qkv, o, gate, up, down, lm_head) or the Hugging Face module
names they stand for (q_proj, c_attn, gate_proj, c_fc, mlp.c_proj, ...). peft matches a target
by the end of a module's name: ``q`` wraps every q_proj (self- and cross-attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.model import ModelSpec

#: short target name -> the glossary module suffixes it wraps (reference_model/ names)
TARGETS: dict[str, tuple[str, ...]] = {
    "q": ("self_attn.q_proj", "cross_attn.q_proj"),
    "k": ("self_attn.k_proj", "cross_attn.k_proj"),
    "v": ("self_attn.v_proj", "cross_attn.v_proj"),
    "qkv": ("self_attn.qkv",),  # one fused projection d -> q, k, v (GPT-2's c_attn)
    "o": ("self_attn.o_proj", "cross_attn.o_proj"),
    "gate": ("ffn.gate",),
    "up": ("ffn.up",),
    "down": ("ffn.down",),
    "lm_head": ("lm_head",),
}
#: Hugging Face module names (llama / mistral / bart, gpt2, bert / vit, t5) -> short names
HF_NAMES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q",),
    "k_proj": ("k",),
    "v_proj": ("v",),
    "o_proj": ("o",),
    "out_proj": ("o",),
    "c_attn": ("qkv",),
    "attn.c_proj": ("o",),
    "c_proj": ("o", "down"),  # GPT-2: attn.c_proj and mlp.c_proj both end in c_proj
    "gate_proj": ("gate",),
    "up_proj": ("up",),
    "c_fc": ("up",),
    "fc1": ("up",),
    "down_proj": ("down",),
    "mlp.c_proj": ("down",),
    "fc2": ("down",),
    "query": ("q",),
    "key": ("k",),
    "value": ("v",),
}


@dataclass(frozen=True)
class FinetuneShapes:
    """The resolved answer: ``kind`` full | freeze | lora | qlora; ``frozen`` the freeze
    patterns (fnmatch over parameter term names, estimator/terms/params.py); ``targets`` the
    glossary suffixes LoRA wraps; ``rank``, ``alpha``, ``dropout``; ``adapter_dtype`` the
    adapters' dtype; ``quant_type`` and ``double_quant`` of a qlora base (bitsandbytes)."""

    kind: str
    frozen: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    rank: int = 0
    alpha: int = 0
    dropout: float = 0.0
    adapter_dtype: str = "fp32"
    quant_type: str = "nf4"
    double_quant: bool = False
    # issue 20: peft's prepare_model_for_kbit_training (peft/utils/other.py): the 16-bit
    # parameters but the 4-bit ones upcast to fp32 (``kbit_dtype``: the weight dtype they had,
    # bnb_4bit_compute_dtype, what the 4-bit linears still compute in); ``input_grad``: its
    # enable_input_require_grads hook (with use_gradient_checkpointing), the embeddings'
    # output requiring grad
    kbit_prep: bool = False
    kbit_dtype: str = ""
    input_grad: bool = False

    @property
    def lora(self) -> bool:
        return self.kind in ("lora", "qlora")

    @property
    def scaling(self) -> float:
        """lora_alpha / r (peft LoraLayer.update_layer, use_rslora=False)."""
        return self.alpha / self.rank


def short_targets(names: tuple[str, ...]) -> tuple[str, ...]:
    """Short target names of ``names`` (short or Hugging Face); SpecError naming an unknown
    one with the valid options."""
    out: list[str] = []
    for name in names:
        found = (name,) if name in TARGETS else HF_NAMES.get(name)
        if found is None:
            valid = ", ".join([*TARGETS, *HF_NAMES])
            raise SpecError(f"lora_targets entry {name!r} is invalid: one of {valid}")
        out += [t for t in found if t not in out]
    return tuple(out)


def default_targets(spec: ModelSpec) -> tuple[str, ...]:
    """peft's default target modules for the model's family (module docstring): GPT-2's
    fused c_attn, else q and v."""
    return ("qkv",) if spec.fused_qkv else ("q", "v")


def resolve_finetune(spec: ModelSpec, workload: Any) -> FinetuneShapes:
    """The FinetuneShapes of ``workload`` (estimator.spec.workload.Workload) on ``spec``."""
    w = workload
    if w.finetune == "full":
        return FinetuneShapes("full")
    if w.finetune == "freeze":
        return FinetuneShapes("freeze", frozen=tuple(w.frozen or ()))
    if spec.arch != "decoder" or w.dropout > 0:
        raise UnsupportedError(
            f"finetune={w.finetune!r} on {spec.name} (arch={spec.arch!r}, dropout={w.dropout}): "
            "what frozen layers save is modelled for decoder-only models without dropout "
            "(lora_dropout is modelled)"
        )
    targets = short_targets(tuple(w.lora_targets)) if w.lora_targets else default_targets(spec)
    for t in targets:
        if spec.fused_qkv and t in ("q", "k", "v"):
            raise SpecError(
                f"lora_targets={t!r} is invalid for {spec.name}: its q, k, v are one fused "
                "projection (c_attn); target qkv"
            )
        if t == "qkv" and not spec.fused_qkv:
            raise SpecError(f"lora_targets='qkv' is invalid for {spec.name}: q, k, v are apart")
        if t == "gate" and not spec.gated:
            raise SpecError(f"lora_targets='gate' is invalid for {spec.name}: no gated FFN")
        if t == "lm_head":
            raise UnsupportedError(
                f"lora_targets='lm_head' on {spec.name}: LoRA on the LM head is not modelled "
                "(what its path saves at the loss)"
            )
    if not any(t in targets for t in ("q", "k", "qkv")):
        raise UnsupportedError(
            f"lora_targets={','.join(targets)}: without q, k or qkv wrapped, how far layer 0 "
            "runs without gradients is not modelled; add q or k"
        )
    return FinetuneShapes(
        w.finetune,
        targets=tuple(s for t in targets for s in TARGETS[t]),
        rank=w.lora_rank,
        alpha=w.lora_alpha,
        dropout=w.lora_dropout,
        adapter_dtype="fp32",  # autocast_adapter_dtype=True: fp16 / bf16 upcast, fp32 kept
        quant_type=w.quant_type,
        double_quant=w.double_quant,
        kbit_prep=w.kbit_prep,
        kbit_dtype=w.dtype if w.kbit_prep else "",
        # issue 20c: transformers' own activation_checkpointing_enable calls it too on an
        # input_ids model (modeling_utils.py _activation_checkpointing_enable:
        # ``needs_embedding_grads`` -> enable_input_require_grads), as get_peft_model does on a
        # checkpointing unquantized one (peft_model.py _prepare_model_for_gradient_checkpointing)
        # (LoRA / QLoRA: tgauge/targets.py enables it on those only)
        input_grad=w.checkpointing == "full"
        and (w.kbit_prep or (spec.implementation == "hf" and w.finetune in ("lora", "qlora"))),
    )
