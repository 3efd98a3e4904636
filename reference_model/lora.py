"""Fine-tuning the reference model (issue 20): LoRA adapters on a frozen base, or freezing by
patterns, as ``Workload.finetune`` says (estimator/spec/finetune.py resolves it).

LoRA (Hu et al. 2021) adds to a frozen linear W [d_out, d_in] the low-rank path
B A x * alpha / r, A [r, d_in], B [d_out, r], as peft 0.21 runs it
(peft/tuners/lora/layer.py Linear.forward):

    result = base_layer(x)
    torch_result_dtype = result.dtype
    x = self._cast_input_dtype(x, lora_A.weight.dtype)      # tuners_utils.py: x.to(dtype)
    result = result + lora_B(lora_A(dropout(x))) * scaling  # scaling = lora_alpha / r
    result = result.to(torch_result_dtype)

and builds it as peft does: A kaiming-uniform, B zero (LoraLayer.reset_lora_parameters), no
bias (LoraConfig bias="none"); adapters in fp32 on a 16-bit base (get_peft_model's
``autocast_adapter_dtype=True``, peft/tuners/tuners_utils.py cast_adapter_dtype); every other
parameter frozen (BaseTuner._mark_only_adapters_as_trainable).

Module names follow the glossary, not peft's wrapper: the wrapped linear keeps its own name and
weight (``self_attn.q_proj.weight``, where peft has ``q_proj.base_layer.weight``), its adapters
are its children ``lora_A`` and ``lora_B``, and lora_dropout runs inside ``lora_A`` (peft keeps
a sibling ``lora_dropout`` module; the same ops save the same tensors, under lora_A here), so
the profiler measures each under the term the estimator predicts
(estimator/terms/finetune.py, estimator/rules/finetune.py). QLoRA's 4-bit base is not built
here (bitsandbytes' Linear4bit: measured on the Hugging Face class).
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn
from torch.nn import functional as F

from estimator.shapes import resolve
from estimator.spec import ModelSpec, UnsupportedError, Workload


def term_name(path: str) -> str:
    """A module path as a glossary term: numeric components dropped (profiler/naming.py)."""
    return ".".join(part for part in path.split(".") if part and not part.isdigit())


class LoraA(nn.Linear):
    """peft's ``lora_dropout`` then ``lora_A`` (nn.Dropout, nn.Linear(d_in, r, bias=False))."""

    def __init__(self, d_in: int, r: int, dropout: float) -> None:
        super().__init__(d_in, r, bias=False)
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p > 0:  # peft: nn.Dropout(p) (nn.Identity when p == 0)
            x = F.dropout(x, self.p, self.training)
        return F.linear(x, self.weight)  # [n, d_in] -> [n, r]


class LoraLinear(nn.Linear):
    """A frozen nn.Linear with LoRA's path beside it (module docstring)."""

    def __init__(self, base: nn.Linear, r: int, alpha: int, dropout: float) -> None:
        super().__init__(base.in_features, base.out_features, base.bias is not None,
                         device="meta")  # fmt: skip
        self.weight, self.bias = base.weight, base.bias  # the base's own tensors, frozen
        device = base.weight.device
        adapter = torch.float32  # autocast_adapter_dtype=True: fp16 / bf16 adapters upcast
        self.lora_A = LoraA(base.in_features, r, dropout).to(device, adapter)
        self.lora_B = nn.Linear(r, base.out_features, bias=False).to(device, adapter)
        self.scaling = alpha / r
        if device.type != "meta":  # peft LoraLayer.reset_lora_parameters(init_lora_weights=True)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = F.linear(x, self.weight, self.bias)  # base_layer(x): [n, d_in] -> [n, d_out]
        result_dtype = result.dtype
        if x.dtype != self.lora_A.weight.dtype:  # _cast_input_dtype: a new fp32 copy
            x = x.to(self.lora_A.weight.dtype)
        result = result + self.lora_B(self.lora_A(x)) * self.scaling  # [n, r] -> [n, d_out]
        return result.to(result_dtype)


def apply_finetune(model: nn.Module, spec: ModelSpec, workload: Workload) -> nn.Module:
    """Freeze ``model`` and add LoRA adapters (``lora``) or freeze the parameters matching
    the patterns (``freeze``), in place, as ``workload.finetune`` says. -> ``model``."""
    if workload.finetune == "full":
        return model
    if workload.finetune == "qlora":
        raise UnsupportedError(
            "finetune='qlora' on the reference model: it has no 4-bit base (bitsandbytes' "
            "Linear4bit); measure the Hugging Face class (--impl hf)"
        )
    ft = resolve(spec, workload).finetune  # targets, rank, alpha, dropout; SpecError if invalid
    if ft.kind == "freeze":
        for path, param in model.named_parameters():
            name = term_name(path.rpartition(".")[0])
            if any(fnmatch.fnmatchcase(name, p) for p in ft.frozen):
                param.requires_grad_(False)
        return model
    model.requires_grad_(False)
    wrapped = [
        (path, mod)
        for path, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
        and any(term_name(path) == t or term_name(path).endswith("." + t) for t in ft.targets)
    ]
    for path, mod in wrapped:
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, LoraLinear(mod, ft.rank, ft.alpha, ft.dropout))
    return model
