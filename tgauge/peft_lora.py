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


def quantize_4bit(model: Any, workload: Workload) -> Any:
    """finetune='qlora' (issue 20): ``model`` reloaded as transformers loads a 4-bit
    checkpoint (save_pretrained to a temporary folder, then from_pretrained with a
    BitsAndBytesConfig: the workload's quant type and double quantization, its dtype as
    bnb_4bit_compute_dtype; transformers/integrations/bitsandbytes.py replaces the layers'
    linears by Linear4bit), then, with ``kbit_prep``, peft's prepare_model_for_kbit_training
    (peft/utils/other.py; use_gradient_checkpointing as checkpointing='full')."""
    import tempfile

    import transformers

    from tgauge.app import require

    require("bitsandbytes", "tgauge validate --finetune qlora")
    dtype = next(model.parameters()).dtype
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=workload.quant_type,
        bnb_4bit_use_double_quant=workload.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )
    device = next(model.parameters()).device
    attn = model.config._attn_implementation
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        model = type(model).from_pretrained(folder, quantization_config=config, dtype=dtype,
                                            device_map=str(device),
                                            attn_implementation=attn)  # fmt: skip
    if workload.kbit_prep:
        import peft

        checkpointing = workload.checkpointing == "full"
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing
        )
        # Linear4bit.forward casts an fp32 bias back to its compute dtype on the first call
        # (``bias.data = bias.data.to(x.dtype)``, bitsandbytes/nn/modules.py): done here, the
        # model the measurements see is the one every step after the first holds (a storage
        # freed inside the first measured forward would be reused under another's key)
        import bitsandbytes as bnb

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit) and module.bias is not None:
                module.bias.data = module.bias.data.to(module.compute_dtype)
    return model


def apply_freeze(model: Any, family: str, workload: Workload) -> Any:
    """finetune='freeze' on a Hugging Face model (issue 20): ``requires_grad_(False)`` on every
    parameter whose glossary term (tgauge/hf_terms.py's table, the base-model prefix and layer
    indices dropped; GPT-2's fused c_attn is ``self_attn.qkv``) matches a frozen pattern, as
    reference_model/lora.py apply_finetune does on the reference model. UserError for a
    parameter the family's table does not name."""
    import fnmatch

    from profiler.naming import term_name
    from tgauge.app import UserError
    from tgauge.hf_terms import HF_TERMS

    table = HF_TERMS.get(family, {})
    prefix = getattr(model, "base_model_prefix", "")
    for path, param in model.named_parameters():
        module = term_name(path.rpartition(".")[0])
        bare = module[len(prefix) + 1 :] if prefix and module.startswith(prefix + ".") else module
        if bare not in table:
            raise UserError(f"--finetune freeze on {family}: parameter {path} has no glossary "
                            "term (tgauge/hf_terms.py)")  # fmt: skip
        group = table[bare]
        fused = {"q_proj": ".qkv", "gate": ".gate_up"}  # GPT-2 / NeoX / Phi-3's fused ones
        tail = group[0].rsplit(".", 1)
        name = group[0] if len(group) == 1 else tail[0] + fused.get(tail[-1], "." + tail[-1])
        if any(fnmatch.fnmatchcase(name, p) for p in workload.frozen or ()):
            param.requires_grad_(False)
    return model
