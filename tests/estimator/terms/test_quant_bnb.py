"""bitsandbytes' quantized weights (estimator/terms/quant_bnb.py), byte for byte against
Linear4bit / Linear8bitLt on CPU: every distinct storage of the weight and its quant state."""

from __future__ import annotations

import pytest

from estimator.terms.quant_bnb import int8_parts, nf4_weight_bytes

SHAPES = [(384, 256), (100, 33), (7, 5), (1024, 4096)]  # odd numels and partial blocks too


def _storages(tensors: list, seen: dict) -> None:
    """Distinct storages (by data pointer) of ``tensors`` into ``seen``."""
    for t in tensors:
        if t is not None and t.numel():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()


def _state_tensors(qs) -> list:
    out = [qs.absmax, qs.code, qs.offset]
    if qs.state2 is not None:
        out += [qs.state2.absmax, qs.state2.code]
    return out


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_4bit_weight_bytes_match_linear4bit(quant_type: str, double_quant: bool) -> None:
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    seen: dict = {}
    predicted = 0
    kept = []  # the modules stay alive: a freed storage's address may be reused
    for d_out, d_in in SHAPES:
        lin = bnb.nn.Linear4bit(d_in, d_out, bias=False, compute_dtype=torch.bfloat16,
                                compress_statistics=double_quant,
                                quant_type=quant_type)  # fmt: skip
        w = torch.randn(d_out, d_in, dtype=torch.bfloat16)
        lin.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=double_quant,
                                       quant_type=quant_type)  # fmt: skip
        lin = lin.to("cpu")  # Params4bit._quantize on the move
        assert lin.weight.bnb_quantized
        kept.append(lin)
        _storages([lin.weight.data, *_state_tensors(lin.weight.quant_state)], seen)
        predicted += nf4_weight_bytes(d_out * d_in, double_quant)
    assert sum(seen.values()) == predicted


def test_8bit_weight_bytes_match_linear8bitlt() -> None:
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    for d_out, d_in in SHAPES:
        lin = bnb.nn.Linear8bitLt(d_in, d_out, bias=False, has_fp16_weights=False)
        lin.load_state_dict(torch.nn.Linear(d_in, d_out, bias=False).half().state_dict())
        lin = lin.to("cpu")  # Int8Params._quantize on the move
        seen: dict = {}
        _storages([lin.weight.data, lin.weight.CB, lin.weight.SCB], seen)
        assert sum(seen.values()) == sum(int8_parts(d_out, d_in).values())


@pytest.mark.parametrize(
    ("family", "double_quant"),
    [("llama", True), ("gpt2", False), pytest.param("llama", False, marks=pytest.mark.slow),
     pytest.param("gpt2", True, marks=pytest.mark.slow)],
)  # fmt: skip
def test_qlora_base_bytes_match_a_4bit_hf_model(family: str, double_quant: bool, tmp_path) -> None:
    """transformers' bitsandbytes integration on CPU: which modules it quantizes and their
    bytes, against estimate's ``weights`` (16-bit rest) + ``weights.base4bit``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    transformers = pytest.importorskip("transformers")
    from estimator.shapes import resolve
    from estimator.spec.model import ModelSpec
    from estimator.spec.workload import Workload
    from estimator.terms.quant_bnb import qlora_base_terms
    from tests.hf_tiny import CONFIGS

    cfg = transformers.AutoConfig.for_model(**CONFIGS[family])
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    q = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=double_quant,
                                        bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=q, dtype=torch.bfloat16, device_map="cpu"
    )
    seen: dict = {}
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        _storages([p.data, *(_state_tensors(qs) if qs is not None else [])], seen)
    spec = ModelSpec.from_hf_config(CONFIGS[family])
    sh = resolve(spec, Workload(dtype="bf16", finetune="qlora", double_quant=double_quant))
    assert sum(seen.values()) == sum(qlora_base_terms(spec, sh).values())


@pytest.mark.parametrize("double_quant", [False, True])
def test_4bit_backward_dequant_matches_live_bytes(double_quant: bool) -> None:
    """MatMul4Bit.backward on CPU: the dequantized weight (and, double-quantized, the fp32
    absmax restored first), then the input's gradient: the live-bytes rise the QLoRA rule
    ``dequant_bytes`` replays (estimator/rules/finetune.py)."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    from estimator.rules.finetune import dequant_bytes
    from estimator.shapes import resolve
    from estimator.spec.presets import PRESETS
    from estimator.spec.workload import Workload
    from profiler.live import LiveMemoryTracker

    spec = PRESETS["llama-3-8b"].model_copy(update={"d_model": 256, "d_ff": 512, "n_heads": 4,
                                                    "n_kv_heads": 2, "head_dim": 64})  # fmt: skip
    sh = resolve(spec, Workload(dtype="bf16", finetune="qlora", double_quant=double_quant))
    weight, absmax = dequant_bytes(spec, sh, "decoder.layers.ffn.up")  # [d_ff, d] = [512, 256]
    n = 8
    lin = bnb.nn.Linear4bit(256, 512, bias=False, compute_dtype=torch.bfloat16,
                            compress_statistics=double_quant)  # fmt: skip
    w = torch.randn(512, 256, dtype=torch.bfloat16)
    lin.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=double_quant)
    lin = lin.to("cpu")
    x = torch.randn(n, 256, dtype=torch.bfloat16, requires_grad=True)
    y = lin(x)
    g = torch.ones_like(y)
    tracker = LiveMemoryTracker()
    tracker.track_existing([x, y, g], "inputs")
    with tracker:
        y.backward(g)
    grad_x = n * 256 * 2
    assert weight == 512 * 256 * 2
    assert tracker.peak.peak_bytes - tracker.peak.baseline_bytes == max(
        weight + absmax, weight + grad_x
    )
