"""train_step under torch.autocast (issue 10): the forward runs its matmuls in the low dtype
on fp32 weights, the loss in fp32, and training still lowers the loss (fp16 with a
GradScaler too)."""

from __future__ import annotations

import pytest
import torch
from ref_specs import GPT, spec

from estimator.spec import Workload
from reference_model import build_model
from reference_model.inputs import make_inputs
from reference_model.train import autocast_dtype, make_optimizer, train_step


def test_autocast_forward_makes_low_logits_and_an_fp32_loss_on_fp32_weights() -> None:
    torch.manual_seed(0)
    s, w = spec(**GPT), Workload(batch_size=2, seq_len=8, autocast="bf16")
    model = build_model(s, w)
    with torch.autocast("cpu", dtype=autocast_dtype(w)):
        out = model(**make_inputs(s, w))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert out.logits.dtype == torch.bfloat16  # lm_head: a linear, on the low list
    assert out.loss.dtype == torch.float32  # cross_entropy_loss: on the fp32 list


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_train_step_under_autocast_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    s, w = spec(**GPT), Workload(batch_size=4, seq_len=8, autocast=name)
    model = build_model(s, w)
    opt = make_optimizer(model, w, lr=1e-2)
    batch = make_inputs(s, w)
    scaler = torch.amp.GradScaler("cpu") if name == "fp16" else None
    first = train_step(model, batch, opt, autocast=autocast_dtype(w), scaler=scaler)
    for _ in range(20):
        last = train_step(model, batch, opt, autocast=autocast_dtype(w), scaler=scaler)
    assert last < 0.8 * first
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
