"""LoRA on a Hugging Face model as peft builds it (issue 20): ``get_peft_model`` with the
workload's LoraConfig, the glossary's short targets written as the family's module names.

Imports torch and peft inside the function: `pip install 'tgauge[finetune]'`.
"""

from __future__ import annotations

from typing import Any

from estimator.spec import SpecError, Workload
from estimator.spec.finetune import short_targets

#: family -> short target -> the module names peft matches (by the end of the name)
HF_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "llama": {"q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "o": ("o_proj",),
              "gate": ("gate_proj",), "up": ("up_proj",), "down": ("down_proj",)},
    "gpt2": {"qkv": ("c_attn",), "o": ("attn.c_proj",), "up": ("c_fc",),
             "down": ("mlp.c_proj",)},
}  # fmt: skip
HF_MODULES["mistral"] = HF_MODULES["llama"]


def target_modules(family: str, workload: Workload, fused_qkv: bool) -> list[str]:
    """peft's target_modules for the workload's short targets (default: q, v; GPT-2 qkv)."""
    names = HF_MODULES.get(family)
    if names is None:
        raise SpecError(f"--finetune lora on model_type={family!r}: tgauge maps LoRA targets "
                        f"for {', '.join(HF_MODULES)}")  # fmt: skip
    wanted = workload.lora_targets
    short = short_targets(tuple(wanted)) if wanted else (("qkv",) if fused_qkv else ("q", "v"))
    out: list[str] = []
    for t in short:
        if t not in names:
            raise SpecError(f"lora_targets={t!r} is invalid for model_type={family!r}: one of "
                            f"{', '.join(names)}")  # fmt: skip
        out += names[t]
    return out


def apply_lora(model: Any, family: str, workload: Workload, fused_qkv: bool) -> Any:
    """``peft.get_peft_model(model, LoraConfig(...))`` with the workload's rank, alpha,
    dropout and targets (autocast_adapter_dtype=True, peft's default: fp32 adapters)."""
    from tgauge.app import require

    require("peft", "tgauge validate --finetune lora")
    import peft

    config = peft.LoraConfig(
        r=workload.lora_rank,
        lora_alpha=workload.lora_alpha,
        lora_dropout=workload.lora_dropout,
        target_modules=target_modules(family, workload, fused_qkv),
    )
    return peft.get_peft_model(model, config)
