"""Quantized weights as shipped (``Workload.quant``): each format's exact tensors per linear
layer, the modules it leaves in 16-bit, and the dequantized-weight transient of a forward.

Which modules are quantized: the linear layers of the transformer blocks (q/k/v/o projections,
cross-attention, FFN up / gate / down), as transformers' GPTQ and AWQ integrations quantize
the block modules (``block_name_to_quantize``, e.g. ``model.layers``) and fbgemm-fp8 skips
``modules_to_not_convert`` (the lm_head). Everything else stays in the 16-bit ``dtype``
(fp16 / bf16): the embeddings, the LM head, the norms, positional tables, poolers and
classifiers, and every bias.

Per quantized linear nn.Linear(d_in -> d_out), g = group_size, n_g = ceil(d_in / g):
  gptq   qweight int32 [d_in * bits / 32, d_out], qzeros int32 [n_g, d_out * bits / 32],
         scales fp16 [n_g, d_out], g_idx int32 [d_in] (the group of each input channel:
         saved by every GPTQ checkpoint; act-order (desc_act) only permutes its values)
         (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py QuantLinear.__init__;
         gptqmodel/nn_modules/qlinear/__init__.py BaseQuantLinear: the same buffers)
  awq    qweight int32 [d_in, d_out * bits / 32], qzeros int32 [n_g, d_out * bits / 32],
         scales fp16 [n_g, d_out] (awq/modules/linear/gemm.py WQLinear_GEMM.__init__)
  fp8    weight float8_e4m3fn [d_out, d_in] and a per-channel scale fp32 [d_out, 1]
         (transformers/integrations/fbgemm_fp8.py FbgemmFp8Linear.__init__), or one fp32
         scale per tensor (``fp8-tensor``: vllm/model_executor/layers/quantization/fp8.py
         Fp8LinearMethod.create_weights, weight_scale per logical weight)
  int8, nf4 (bitsandbytes LLM.int8 and NF4 / FP4, blockwise absmax): not in this module
         (estimator/terms/quant_bnb.py registers them with ``register_format``); refused by
         name until it does.

Dequantized-weight transient: the torch fallback kernels (gptqmodel TorchQuantLinear,
awq's dequantize fallback) rebuild the whole weight in the 16-bit dtype [d_in, d_out] before
the matmul, one linear at a time; the largest one is added to an inference peak. CUDA kernels
(exllama, marlin, fbgemm fp8) dequantize in registers: that bound is then conservative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from estimator.spec.dtypes import nbytes
from estimator.spec.errors import UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.terms.quant_bnb import int8_parts, nf4_weight_bytes

INT32_BYTES = 4
FP16_BYTES = 2
FP32_BYTES = 4
#: formats whose layout another module owns (bitsandbytes, issue 20)
BNB_FORMATS = ("int8", "nf4", "fp4")


@dataclass(frozen=True)
class QuantFormat:
    """One format: bytes of a quantized nn.Linear(d_in, d_out) weight (its bias excluded),
    and whether a forward rebuilds the 16-bit weight (the dequantized transient)."""

    name: str
    linear_bytes: Callable[[int, int, int], int]  # (d_in, d_out, group_size) -> bytes
    default_group_size: int | None
    dequantizes: bool
    source: str


#: format name -> QuantFormat (``register_format``)
FORMATS: dict[str, QuantFormat] = {}


def register_format(fmt: QuantFormat) -> QuantFormat:
    """Add ``fmt`` to the registry (a second format of one name is an error)."""
    if fmt.name in FORMATS and FORMATS[fmt.name] != fmt:
        raise ValueError(f"two quantization formats named {fmt.name!r}")
    FORMATS[fmt.name] = fmt
    return fmt


def _packed(n: int, bits: int) -> int:
    """int32 words holding n values of ``bits`` bits (32 // bits per word)."""
    per_word = 32 // bits
    return -(-n // per_word)


def _gptq(d_in: int, d_out: int, g: int, bits: int = 4) -> int:
    n_g = -(-d_in // g)
    qweight = _packed(d_in, bits) * d_out * INT32_BYTES  # [d_in / 8, d_out] int32
    qzeros = n_g * _packed(d_out, bits) * INT32_BYTES  # [n_g, d_out / 8] int32
    scales = n_g * d_out * FP16_BYTES  # [n_g, d_out] fp16
    g_idx = d_in * INT32_BYTES  # [d_in] int32
    return qweight + qzeros + scales + g_idx


def _awq(d_in: int, d_out: int, g: int, bits: int = 4) -> int:
    n_g = -(-d_in // g)
    qweight = d_in * _packed(d_out, bits) * INT32_BYTES  # [d_in, d_out / 8] int32
    qzeros = n_g * _packed(d_out, bits) * INT32_BYTES  # [n_g, d_out / 8] int32
    scales = n_g * d_out * FP16_BYTES  # [n_g, d_out] fp16
    return qweight + qzeros + scales


def _fp8_channel(d_in: int, d_out: int, g: int) -> int:
    return nbytes(d_in * d_out, "fp8") + d_out * FP32_BYTES  # weight, weight_scale [d_out, 1]


def _fp8_tensor(d_in: int, d_out: int, g: int) -> int:
    return nbytes(d_in * d_out, "fp8") + FP32_BYTES  # weight, one scale


register_format(
    QuantFormat("gptq", _gptq, 128, True, "auto_gptq qlinear QuantLinear (4-bit)")
)  # fmt: skip
register_format(QuantFormat("awq", _awq, 128, True, "awq/modules/linear/gemm.py WQLinear_GEMM"))
register_format(
    QuantFormat("fp8", _fp8_channel, None, False, "transformers fbgemm_fp8 FbgemmFp8Linear")
)
register_format(QuantFormat("fp8-tensor", _fp8_tensor, None, False, "vLLM Fp8LinearMethod"))


def _bnb_nf4(d_in: int, d_out: int, g: int) -> int:
    return nf4_weight_bytes(d_in * d_out, double_quant=False)


def _bnb_int8(d_in: int, d_out: int, g: int) -> int:
    return sum(int8_parts(d_out, d_in).values())


# bitsandbytes' layouts (estimator/terms/quant_bnb.py, measured against Linear4bit /
# Linear8bitLt on CPU): 4-bit NF4 with fp32 absmax per block of 64 (no double quantization:
# load_in_4bit's default); a 4-bit forward dequantizes the weight to the compute dtype
# (bitsandbytes/autograd/_functions.py matmul_4bit: dequantize_4bit, then the matmul, outside
# the gemv path of one token); LLM.int8 keeps CB int8 + SCB and multiplies in int8 on CUDA
register_format(
    QuantFormat("nf4", _bnb_nf4, None, True, "bitsandbytes Linear4bit nf4 (quant_bnb.py)")
)
register_format(
    QuantFormat("int8", _bnb_int8, None, False, "bitsandbytes Linear8bitLt (quant_bnb.py)")
)


def quant_format(name: str) -> QuantFormat:
    """The registered format ``name``; UnsupportedError naming the valid ones."""
    if name in FORMATS:
        return FORMATS[name]
    raise UnsupportedError(f"quant={name!r} is not known; use one of {', '.join(FORMATS)}")


def block_linears(spec: ModelSpec) -> list[tuple[str, int, int, int]]:
    """(term, d_in, d_out, count) of every linear layer in the transformer blocks."""
    d, d_q, d_kv, d_ff = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff
    out = []
    for stack, n in spec.stacks:
        lay = f"{stack}.layers"
        attns = ["self_attn"]
        if stack == "decoder" and spec.arch == "encoder-decoder":
            attns.append("cross_attn")
        for attn in attns:
            out += [
                (f"{lay}.{attn}.q_proj", d, d_q, n),
                (f"{lay}.{attn}.k_proj", d, d_kv, n),
                (f"{lay}.{attn}.v_proj", d, d_kv, n),
                (f"{lay}.{attn}.o_proj", d_q, d, n),
            ]
        out.append((f"{lay}.ffn.up", d, d_ff, n))
        if spec.gated:
            out.append((f"{lay}.ffn.gate", d, d_ff, n))
        out.append((f"{lay}.ffn.down", d_ff, d, n))
    return out


def quantized_weight_bytes(
    spec: ModelSpec, name: str, dtype16: str, group_size: int | None, all_params_16: int
) -> int:
    """Weights of ``spec`` shipped in format ``name``: the block linears' quantized tensors,
    everything else (``all_params_16``: every parameter in ``dtype16``, less the block
    linears' weights) in the 16-bit dtype."""
    fmt = quant_format(name)
    g = group_size or fmt.default_group_size or 0
    linears = block_linears(spec)
    kept = all_params_16 - sum(n * nbytes(d_in * d_out, dtype16) for _, d_in, d_out, n in linears)
    return kept + sum(n * fmt.linear_bytes(d_in, d_out, g) for _, d_in, d_out, n in linears)


def dequantized_transient_bytes(spec: ModelSpec, name: str, dtype16: str) -> Any:
    """The largest block linear's weight rebuilt in ``dtype16`` by a dequantizing forward
    (module docstring); 0 for formats whose matmul reads the quantized weight."""
    if not quant_format(name).dequantizes:
        return 0
    return max(nbytes(d_in * d_out, dtype16) for _, d_in, d_out, _ in block_linears(spec))
