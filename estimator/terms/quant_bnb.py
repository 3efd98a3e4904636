"""bitsandbytes' quantized weights, byte for byte (issue 20: QLoRA's base; helper 19 reuses it
for serving): the 4-bit layout of ``Linear4bit`` (NF4 / FP4) and the 8-bit layout of
LLM.int8's ``Linear8bitLt``, per weight of numel n = d_out * d_in.

4-bit (bitsandbytes/functional.py quantize_4bit, nn/modules.py Params4bit._quantize; blocksize
64, the default on every backend):
  data          Params4bit: two 4-bit codes per byte, uint8 [ceil(n / 2), 1]
  absmax        one scale per block of 64: fp32 [ceil(n / 64)]; with double quantization
                (compress_statistics, bnb_4bit_use_double_quant) uint8 [ceil(n / 64)],
                quantized by quantize_blockwise(absmax - offset, blocksize=256)
  quant_map     QuantState.code: get_4bit_type(quant_type) builds a new fp32 [16] per weight
  offset        double quantization: absmax.mean(), one fp32 0-dim tensor per weight
  nested_absmax double quantization: state2.absmax fp32 [ceil(ceil(n / 64) / 256)]
  nested_code   double quantization: state2.code, fp32 [256], a copy of the dynamic map per
                weight (quantize_blockwise: ``QuantState(code=code.to(A.device, copy=True))``;
                measured: no storage is shared between two weights)
8-bit (nn/modules.py Int8Params._quantize, has_fp16_weights=False):
  data          CB int8 [d_out, d_in]
  SCB           row-wise absmax fp32 [d_out]
A bias stays in the unquantized dtype. Which modules are quantized: every nn.Linear (and
GPT-2's Conv1D) but the output embedding, tied weights and the model's last module
(transformers/quantizers/base.py get_keys_to_not_convert; integrations/bitsandbytes.py
replace_with_bnb_linear): the layers' projections and FFN linears (and a pooler's or MLM
head's dense), not the LM head, embeddings, norms or a classifier. Measured against
bitsandbytes on CPU (tests/estimator/terms/test_quant_bnb.py).
"""

from __future__ import annotations

import functools
from typing import Any

from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.terms.finetune import named_param_shapes

FP32_BYTES = 4
BNB_4BIT_BLOCKSIZE = 64  # Linear4bit / Params4bit(blocksize=64)
BNB_NESTED_BLOCKSIZE = 256  # quantize_4bit: quantize_blockwise(_absmax - offset, blocksize=256)
BNB_4BIT_CODE_LEN = 16  # get_4bit_type: 2**4 values
BNB_DYNAMIC_CODE_LEN = 256  # create_dynamic_map: 2**8 values


def nf4_parts(numel: int, double_quant: bool) -> dict[str, int]:
    """Bytes of one 4-bit weight of ``numel`` elements, per part (module docstring). NF4 and
    FP4 lay out the same."""
    blocks = -(-numel // BNB_4BIT_BLOCKSIZE)
    parts = {"data": -(-numel // 2), "quant_map": BNB_4BIT_CODE_LEN * FP32_BYTES}
    if double_quant:
        parts["absmax"] = blocks  # uint8
        parts["offset"] = FP32_BYTES
        parts["nested_absmax"] = -(-blocks // BNB_NESTED_BLOCKSIZE) * FP32_BYTES
        parts["nested_code"] = BNB_DYNAMIC_CODE_LEN * FP32_BYTES
    else:
        parts["absmax"] = blocks * FP32_BYTES
    return parts


def nf4_weight_bytes(numel: int, double_quant: bool) -> int:
    """One 4-bit weight, every part."""
    return sum(nf4_parts(numel, double_quant).values())


def int8_parts(d_out: int, d_in: int) -> dict[str, int]:
    """Bytes of one LLM.int8 weight [d_out, d_in]: CB int8 and SCB fp32 [d_out]."""
    return {"data": d_out * d_in, "SCB": d_out * FP32_BYTES}


def is_quantized(name: str, shape: tuple[int, ...]) -> bool:
    """Whether bitsandbytes quantizes the parameter ``name`` of ``shape`` (module docstring):
    the weight of a layer linear, a pooler's or an MLM head's dense."""
    linear = name.startswith(("encoder.layers.", "decoder.layers."))
    linear = linear or name in ("pooler.proj", "head_transform.dense")
    return linear and len(shape) == 2


@functools.lru_cache(maxsize=256)
def quantized_base_bytes(spec: ModelSpec, dtype: str, bits: int, double_quant: bool) -> tuple:
    """(quantized bytes, unquantized bytes) of the model's weights: the quantized linears in
    ``bits`` (4: Linear4bit, 8: Linear8bitLt) and everything else in ``dtype``."""
    quant = rest = 0
    for name, shape in named_param_shapes(spec):
        numel = 1
        for x in shape:
            numel *= x
        if is_quantized(name, shape):
            if bits == 4:
                quant += nf4_weight_bytes(numel, double_quant)
            else:
                quant += sum(int8_parts(*shape).values())
        else:
            rest += nbytes(numel, dtype)
    return quant, rest


@functools.lru_cache(maxsize=256)
def kbit_prepared_rest_bytes(spec: ModelSpec, dtype: str) -> int:
    """The unquantized parameters after peft's prepare_model_for_kbit_training (issue 20,
    peft/utils/other.py: every fp16 / bf16 parameter not a Params4bit to fp32): fp32, but a
    4-bit linear's bias, which Linear4bit.forward casts back to its compute dtype ``dtype``
    (``bias.data = bias.data.to(x.dtype)``, bitsandbytes/nn/modules.py) from the first step on."""
    named = named_param_shapes(spec)
    quantized = {name for name, shape in named if is_quantized(name, shape)}
    rest = 0
    for name, shape in named:
        numel = 1
        for x in shape:
            numel *= x
        if name in quantized:
            rest += 0 if len(shape) == 2 else nbytes(numel, dtype)  # the weight: 4-bit
        else:
            rest += nbytes(numel, "fp32")
    return rest


def qlora_base_terms(spec: ModelSpec, sh: Any) -> dict[str, int]:
    """``weights``: the unquantized modules in the weight dtype (fp32 after
    prepare_model_for_kbit_training: ``kbit_prepared_rest_bytes``); ``weights.base4bit``: the
    4-bit linears with their quant states (``sh``: estimator.shapes.Shapes)."""
    quant, rest = quantized_base_bytes(spec, sh.dtype, 4, sh.finetune.double_quant)
    if sh.finetune.kbit_prep:
        rest = kbit_prepared_rest_bytes(spec, sh.dtype)
    return {"weights": rest, "weights.base4bit": quant}
