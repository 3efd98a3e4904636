"""The optimizer as the reference model builds it: parameter order and shapes (what a step
iterates over), the implementation flags, and bitsandbytes' 8-bit AdamW (states exact; its
CPU kernel's working set as estimator/replay/optimizer_step.py models it)."""

from __future__ import annotations

import pytest
import torch
from ref_specs import LLAMA, spec
from test_ref_params import CASES

from estimator import estimate
from estimator.replay.optimizer_step import step_temporaries_bytes
from estimator.shapes import resolve
from estimator.spec import Workload
from estimator.terms.optimizer import FP32_BYTES
from estimator.terms.params import param_tensor_shapes
from reference_model import build_model
from reference_model.train import make_optimizer


@pytest.mark.parametrize("name", list(CASES))
def test_param_tensor_shapes_match_model_parameters_in_order(name: str) -> None:
    s = spec(**CASES[name])
    assert tuple(tuple(p.shape) for p in build_model(s).parameters()) == param_tensor_shapes(s)


@pytest.mark.parametrize(
    "optimizer,impl,cls,flags",
    [
        ("adamw", "fused", torch.optim.AdamW, {"fused": True, "foreach": False}),
        ("adamw", "foreach", torch.optim.AdamW, {"fused": False, "foreach": True}),
        ("adam", "forloop", torch.optim.Adam, {"fused": False, "foreach": False}),
        ("adamw", None, torch.optim.AdamW, {"fused": False, "foreach": False}),  # cpu: loop
        ("sgd-momentum", "foreach", torch.optim.SGD, {"fused": False, "foreach": True}),
        ("adafactor", "foreach", torch.optim.Adafactor, {"foreach": True}),
        ("adafactor", None, torch.optim.Adafactor, {"foreach": False}),
    ],
)
def test_make_optimizer_runs_the_workloads_impl(optimizer, impl, cls, flags) -> None:
    model = build_model(spec(**LLAMA))
    opt = make_optimizer(model, Workload(optimizer=optimizer, optimizer_impl=impl))
    assert type(opt) is cls
    assert {k: bool(opt.defaults[k]) for k in flags} == flags


def test_meta_dry_run_steps_as_its_target_device_would() -> None:
    model = build_model(spec(**LLAMA), device="meta")
    for device, foreach in (("cuda", True), ("cpu", False)):
        opt = make_optimizer(model, Workload(optimizer="adamw", device=device))
        assert opt.defaults["foreach"] is foreach and not opt.defaults["fused"]


def test_8bit_adamw_state_bytes_match_bitsandbytes_exactly() -> None:
    pytest.importorskip("bitsandbytes")
    from tgauge.validate import validate_point

    s = spec(**{**LLAMA, "vocab_size": 4096, "tie_embeddings": False})
    point = validate_point(s, Workload(optimizer="adamw-8bit", batch_size=1, seq_len=4))
    assert point.status == "ok", point.notes
    states = [r for r in point.rows if r.term.startswith("memory.optimizer.")]
    assert {r.term.split(".")[2] for r in states} >= {"state1", "absmax1", "qmap1"}
    assert all(r.verdict == "exact" for r in states), states
    peak = next(r for r in point.rows if r.term == "peak_memory")
    assert peak.verdict == "not measured" and "custom op" in peak.note


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_8bit_cpu_kernel_working_set_matches_the_rule(dtype) -> None:
    """bitsandbytes' CPU step, called as the Python function behind its custom op (the live
    tracker sees inside it only then): its peak above parameter, gradient and states."""
    bnb = pytest.importorskip("bitsandbytes")
    from bitsandbytes.backends.cpu import ops

    from profiler.live import LiveMemoryTracker

    s = spec(**{**LLAMA, "vocab_size": 4096, "tie_embeddings": False})
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    w = Workload(optimizer="adamw-8bit", dtype=name, device="cpu", seq_len=4)
    lm_head = torch.nn.Linear(s.d_model, s.vocab_size, bias=False).to(dtype)  # the largest
    opt = bnb.optim.AdamW8bit(lm_head.parameters())
    lm_head(torch.randn(2, s.d_model, dtype=dtype)).sum().backward()
    opt.step()
    p, st = lm_head.weight, opt.state[lm_head.weight]
    live = LiveMemoryTracker()
    live.track_existing([p, p.grad, dict(st)], "existing")
    with live:
        ops._optimizer_update_8bit_blockwise_cpu(
            "adam", p.grad, p, st["state1"], st["state2"], 0.9, 0.999, 0.0, 0.0, 1e-8, 2,
            1e-3, st["qmap1"], st["qmap2"], st["absmax1"], st["absmax2"], 1e-2, 1.0,
        )  # fmt: skip
    assert live.peak.peak_bytes - live.baseline == step_temporaries_bytes(s, resolve(s, w))
    assert (
        step_temporaries_bytes(s, resolve(s, w)) == (5 + (name != "fp32")) * FP32_BYTES * p.numel()
    )
    cuda = estimate(s, w.model_copy(update={"device": "cuda"}))
    assert step_temporaries_bytes(s, resolve(s, cuda.workload)) == 0  # one in-place CUDA kernel


@pytest.mark.parametrize("optimizer,impl", [("adamw", "foreach"), ("adafactor", "forloop")])
def test_bf16_step_temporaries_match_measured_peak(optimizer, impl) -> None:
    """States and temporaries in the weight dtype (bf16): the step's peak, measured."""
    from tgauge.validate import validate_point

    s = spec(**{**LLAMA, "vocab_size": 4096, "tie_embeddings": False})
    w = Workload(batch_size=1, seq_len=4, dtype="bf16", optimizer=optimizer, optimizer_impl=impl)
    point = validate_point(s, w)
    assert point.status == "ok", point.notes
    assert all(r.verdict == "exact" for r in point.rows if r.term.startswith("memory.optimizer"))
    peak = next(r for r in point.rows if r.term == "peak_memory")
    assert peak.rel_error <= 0.02, peak
    assert point.peak_phase_predicted == point.peak_phase_measured == "optimizer_step"
