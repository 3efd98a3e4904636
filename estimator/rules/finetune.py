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

from estimator.rules.registry import register
from estimator.shapes import Shapes
from estimator.spec.dtypes import bits
from estimator.spec.model import ModelSpec


@register("saved.lora", "reference")
def lora_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, in_bytes: int) -> dict[str, Any]:
    """Bytes lora_A and lora_B save for one wrapped linear over n tokens whose input has
    ``in_bytes`` bytes per element (module docstring)."""
    ft = sh.finetune
    ab = bits(ft.adapter_dtype) // 8
    if ft.dropout > 0:
        mask = n * d_in * (1 if sh.device == "cuda" else ab)
        lora_a = n * d_in * ab + mask
    else:
        lora_a = n * d_in * ab if ab != in_bytes else 0
    return {"lora_A": lora_a, "lora_B": n * ft.rank * ab}
