"""Training: optimizers, LR schedule, one training step (cross-entropy, teacher forcing).

The optimizer runs as the workload says (``optimizer_impl``: fused, foreach or for-loop),
or as torch itself picks on the device its step runs for
(estimator.spec.workload.resolved_optimizer_impl: foreach on CUDA, the for-loop on CPU); the
flags are passed explicitly, so a meta dry run steps the way its target device
(``workload.device``) would.
Torch's default hyper-parameters otherwise (the estimator's step rules assume them).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from estimator.spec import Workload
from estimator.spec.workload import resolved_optimizer_impl

LR = 1e-3


def optimizer_impl(params: list[nn.Parameter], workload: Workload) -> str | None:
    """The implementation the step runs as: the workload's, else torch's default on the
    parameters' device (on meta: on ``workload.device``, the target of a dry run)."""
    device = params[0].device.type if params else "cpu"
    if device in ("cpu", "cuda"):
        workload = workload.model_copy(update={"device": device})
    return resolved_optimizer_impl(workload)


def make_optimizer(
    model: nn.Module, workload: Workload, lr: float = LR
) -> torch.optim.Optimizer | None:
    """The workload's optimizer over the model's trainable parameters (None for 'none').

    adamw-8bit is bitsandbytes' AdamW8bit (ImportError when bitsandbytes is missing)."""
    params = [p for p in model.parameters() if p.requires_grad]
    name, impl = workload.optimizer, optimizer_impl(params, workload)
    flags = {"fused": impl == "fused", "foreach": impl == "foreach"}
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, **flags)
    if name in ("sgd", "sgd-momentum"):
        momentum = 0.9 if name == "sgd-momentum" else 0.0
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **flags)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=lr, foreach=impl == "foreach")
    if name == "adamw-8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=lr)
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


def autocast_dtype(workload: Workload) -> torch.dtype | None:
    """The torch dtype of ``workload.autocast`` (None: no autocast)."""
    names = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return names[workload.autocast] if workload.autocast else None


def train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """zero_grad(set_to_none=True), forward, backward, optimizer step -> the loss.

    ``autocast``: forward and loss under torch.autocast(device, autocast) (backward outside,
    as torch's AMP recipe); ``scaler``: fp16 loss scaling (torch.amp.GradScaler: scale the
    loss, unscale the grads, skip a step with inf/nan grads, update the scale)."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device.type
    with torch.autocast(device_type=device, dtype=autocast or torch.float32,
                        enabled=autocast is not None):  # fmt: skip
        loss = objective(model(**batch))
    if scaler is not None:
        scaler.scale(loss).backward()
        if optimizer is not None:
            scaler.step(optimizer)
            scaler.update()
        return loss.item()
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    return loss.item()
