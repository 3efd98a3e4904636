"""Quantized weights as shipped (issue 19, estimator/terms/quant.py): GPTQ / AWQ / fp8 bytes
against each format's tensor layout, written out for a real published config (Meta-Llama-3-8B's
config.json, as its GPTQ / AWQ 4-bit checkpoints quantize it: bits 4, group_size 128)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from estimator.estimate import estimate
from estimator.spec import UnsupportedError, Workload
from estimator.spec.presets import get_preset
from estimator.terms.quant import block_linears, dequantized_transient_bytes, quant_format
from tgauge.cli import app

LLAMA = get_preset("llama-3-8b")
# meta-llama/Meta-Llama-3-8B config.json: hidden_size 4096, intermediate_size 14336,
# num_attention_heads 32, num_key_value_heads 8, num_hidden_layers 32, vocab_size 128256,
# tie_word_embeddings false
D, D_KV, D_FF, L, V, G = 4096, 1024, 14336, 32, 128256, 128
# (d_in, d_out) of q, k, v, o, gate, up, down
LINEARS = [(D, D), (D, D_KV), (D, D_KV), (D, D), (D, D_FF), (D, D_FF), (D_FF, D)]
KEPT_16BIT = (2 * V * D + (2 * L + 1) * D) * 2  # embed_tokens, lm_head, 65 RMSNorms; fp16


def _weights(quant: str, **extra) -> int:
    w = Workload(mode="decode", dtype="fp16", quant=quant, prompt_len=16, new_tokens=2, **extra)
    return estimate(LLAMA, w).memory.terms["weights"]


def test_spec_matches_the_published_config() -> None:
    assert (LLAMA.d_model, LLAMA.d_ff, LLAMA.n_kv_heads * LLAMA.head_dim) == (D, D_FF, D_KV)
    assert (LLAMA.n_decoder_layers, LLAMA.vocab_size, LLAMA.tie_embeddings) == (L, V, False)
    assert [(i, o) for _, i, o, _ in block_linears(LLAMA)] == LINEARS[:4] + [
        (D, D_FF), (D, D_FF), (D_FF, D)
    ]  # fmt: skip


def test_gptq_bytes_match_quantlinear_layout() -> None:
    # auto_gptq QuantLinear (4 bits): qweight int32 [d_in/8, d_out], qzeros int32
    # [d_in/128, d_out/8], scales fp16 [d_in/128, d_out], g_idx int32 [d_in]
    per_layer = sum(
        (i // 8) * o * 4 + (i // G) * (o // 8) * 4 + (i // G) * o * 2 + i * 4 for i, o in LINEARS
    )
    assert _weights("gptq") == L * per_layer + KEPT_16BIT == 5_732_835_328  # 5.34 GiB


def test_awq_bytes_match_wqlinear_gemm_layout() -> None:
    # awq WQLinear_GEMM: qweight int32 [d_in, d_out/8], qzeros int32 [d_in/128, d_out/8],
    # scales fp16 [d_in/128, d_out]; no g_idx
    per_layer = sum(
        i * (o // 8) * 4 + (i // G) * (o // 8) * 4 + (i // G) * o * 2 for i, o in LINEARS
    )
    assert _weights("awq") == L * per_layer + KEPT_16BIT


def test_group_size_changes_scales_and_zeros_only() -> None:
    per_layer = sum(
        (i // 8) * o * 4 + (i // 64) * (o // 8) * 4 + (i // 64) * o * 2 + i * 4 for i, o in LINEARS
    )
    assert _weights("gptq", group_size=64) == L * per_layer + KEPT_16BIT


def test_fp8_bytes_match_fbgemm_and_per_tensor_layouts() -> None:
    # FbgemmFp8Linear: weight fp8 [d_out, d_in], weight_scale fp32 [d_out, 1]
    assert _weights("fp8") == L * sum(i * o + o * 4 for i, o in LINEARS) + KEPT_16BIT
    assert _weights("fp8-tensor") == L * sum(i * o + 4 for i, o in LINEARS) + KEPT_16BIT


def test_int4_dtype_quantizes_everything_but_gptq_keeps_embeddings_16bit() -> None:
    # issue 19: --dtype int4 gave 3.74 GiB (embeddings and LM head in 4 bits too)
    int4 = estimate(LLAMA, Workload(mode="decode", dtype="int4", prompt_len=16, new_tokens=2))
    assert int4.memory.terms["weights"] < _weights("gptq") - V * D * 2


def test_peak_adds_the_largest_dequantized_weight_to_the_16bit_replay() -> None:
    w = Workload(mode="decode", dtype="fp16", attention_impl="fused", prompt_len=64, new_tokens=4)
    plain, gptq = estimate(LLAMA, w), estimate(LLAMA, w.replace(quant="gptq"))
    transient = dequantized_transient_bytes(LLAMA, "gptq", "fp16")
    assert transient == D * D_FF * 2  # gate / up / down [4096 x 14336] in fp16
    saved = plain.memory.terms["weights"] - gptq.memory.terms["weights"]
    assert gptq.peak_memory_bytes == plain.peak_memory_bytes - saved + transient
    assert gptq.peak_phase == plain.peak_phase


def test_bitsandbytes_formats_serve_with_their_measured_layout() -> None:
    """--quant nf4 / int8: the block linears in bitsandbytes' layout (quant_bnb.py, measured
    against Linear4bit / Linear8bitLt in test_quant_bnb.py), the rest 16-bit."""
    from estimator.terms.quant import block_linears
    from estimator.terms.quant_bnb import int8_parts, nf4_weight_bytes

    linears = block_linears(LLAMA)
    quantized = sum(d_in * d_out * n for _, d_in, d_out, n in linears)
    nf4 = sum(nf4_weight_bytes(d_in * d_out, False) * n for _, d_in, d_out, n in linears)
    int8 = sum(sum(int8_parts(d_out, d_in).values()) * n for _, d_in, d_out, n in linears)
    fp16 = _weights(None)
    assert _weights("nf4") == fp16 - 2 * quantized + nf4
    assert _weights("int8") == fp16 - 2 * quantized + int8
    assert nf4 < int8 < 2 * quantized


def test_unknown_quant_format_refused_by_name() -> None:
    with pytest.raises(UnsupportedError, match="quant='fp4' is not known"):
        quant_format("fp4")


def test_quant_needs_16bit_dtype_and_group_size_needs_gptq_or_awq() -> None:
    with pytest.raises(ValueError, match="dtype"):
        Workload(mode="decode", dtype="fp32", quant="gptq")
    with pytest.raises(ValueError, match="group_size"):
        Workload(mode="decode", dtype="bf16", quant="fp8", group_size=64)


def test_cli_quant_option_and_refusal() -> None:
    runner = CliRunner()
    args = ["estimate", "llama-3-8b", "--mode", "decode", "--dtype", "fp16", "--json"]
    out = runner.invoke(app, [*args, "--quant", "gptq"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["memory"]["terms"]["weights"] == 5_732_835_328
    nf4 = runner.invoke(app, [*args, "--quant", "nf4"])
    assert nf4.exit_code == 0, nf4.output
    assert json.loads(nf4.stdout)["memory"]["terms"]["weights"] == _weights("nf4")
    bad = runner.invoke(app, [*args, "--quant", "q3"])
    assert bad.exit_code == 2 and "q3" in bad.output
