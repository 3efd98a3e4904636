"""Training: optimizers, LR schedule, one training step (cross-entropy, teacher forcing).

Adam/AdamW use the fused kernel where torch supports it for the parameters' device and dtype
(CUDA/CPU float parameters in recent torch), else ``foreach=False``: both update parameter by
parameter, so no parameter-sized temporaries of the multi-tensor path appear in the step and
the optimizer memory is exactly its states (exp_avg, exp_avg_sq; momentum_buffer for SGD).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from estimator.spec import Workload

LR = 1e-3


def _fused_ok(params: list[nn.Parameter]) -> bool:
    """Whether torch's fused Adam supports all these parameters (device type and dtype)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # very old torch
        return False
    devices = _get_fused_kernels_supported_devices()
    floats = (torch.float32, torch.float16, torch.bfloat16)
    return all(p.device.type in devices and p.dtype in floats for p in params)


def make_optimizer(
    model: nn.Module, workload: Workload, lr: float = LR
) -> torch.optim.Optimizer | None:
    """The workload's optimizer over the model's trainable parameters (None for 'none')."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = workload.optimizer
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        if _fused_ok(params):
            return cls(params, lr=lr, fused=True)
        return cls(params, lr=lr, foreach=False)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=False)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=False)
    return None


def warmup_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, decay: str = "linear"
) -> torch.optim.lr_scheduler.LambdaLR:
    """LR factor: linear warmup 0 -> 1 over warmup_steps, then linear or cosine decay to 0 at
    total_steps: f(t) = t / warmup for t < warmup; then 1 - q (linear) or (1 + cos(pi q)) / 2
    (cosine) with q = (t - warmup) / (total - warmup)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        q = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - q if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * q))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def objective(output) -> torch.Tensor:
    """The model's cross-entropy loss; a model without an LM head (BERT, ViT) is trained on a
    stand-in objective, the mean square of its pooled (else last hidden) output, so that the
    backward pass covers every layer."""
    if output.loss is not None:
        return output.loss
    out = output.pooled if output.pooled is not None else output.hidden_states
    return out.float().pow(2).mean()


def train_step(
    model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None
) -> float:
    """zero_grad(set_to_none=True), forward, backward, optimizer step -> the loss."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    loss = objective(model(**batch))
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    return loss.item()
