"""Backward and recompute FLOPs charged to the module that created each autograd node.

Oracle: hand-computed 2*m*n*k per matmul; a linear layer's backward is dX + dW (2x its forward)
when its input needs grad, dW only (1x) when it does not; a checkpointed module's recompute
equals its forward; checkpointing leaves backward unchanged.
"""

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from profiler.flops import count_flops

B, S, D_IN, D = 2, 5, 3, 8


class Attention(nn.Module):
    """q/k/v projections share one input; scores and mix are the module's own bmm ops."""

    def __init__(self, d: int = D) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        probs = (q @ k.transpose(1, 2)).softmax(-1)  # [B, S, S]
        return self.o_proj(probs @ v)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(D_IN, D, bias=False)
        self.attn = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.inp(x))


def test_qkv_backward_is_twice_forward_each_charged_to_its_own_projection():
    model = Block()
    x = torch.randn(B, S, D_IN)  # needs no grad: inp's backward computes dW only
    counted = count_flops(model, lambda: model(x).sum().backward())
    proj = 2 * B * S * D * D  # [B*S, D] @ [D, D]
    attn_own = 2 * (2 * B * S * S * D)  # Q K^T and probs @ V: [S, D] x [D, S], [S, S] x [S, D]
    inp = 2 * B * S * D_IN * D
    assert counted.flops.terms == {
        "forward.inp": inp,
        "forward.attn.q_proj": proj,
        "forward.attn.k_proj": proj,
        "forward.attn.v_proj": proj,
        "forward.attn.o_proj": proj,
        "forward.attn": attn_own,
        "backward.inp": inp,  # dW only
        "backward.attn.q_proj": 2 * proj,  # dX and dW
        "backward.attn.k_proj": 2 * proj,
        "backward.attn.v_proj": 2 * proj,
        "backward.attn.o_proj": 2 * proj,
        "backward.attn": 2 * attn_own,  # both operands of each bmm need grad
    }
    assert counted.by_op.total == counted.flops.total


def test_input_that_needs_grad_gives_the_first_layer_dx_too():
    model = Block()
    x = torch.randn(B, S, D_IN, requires_grad=True)
    counted = count_flops(model, lambda: model(x).sum().backward())
    assert counted.flops.terms["backward.inp"] == 2 * (2 * B * S * D_IN * D)


class Parent(nn.Module):
    """Own matmul feeding a child called with a keyword argument, then its own matmul again."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(D_IN, D))
        self.child = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.w  # the parent's own op: [B*S, D_IN] @ [D_IN, D]
        return self.child(input=h) @ self.w.T  # [B*S, D] @ [D, D_IN]


def test_parent_ops_around_a_keyword_called_child_are_charged_to_the_parent():
    model = Parent()
    x = torch.randn(B * S, D_IN)
    counted = count_flops(model, lambda: model(x).sum().backward())
    mm = 2 * B * S * D_IN * D
    child = 2 * B * S * D * D
    assert counted.flops.terms == {
        "forward.(root)": 2 * mm,
        "forward.child": child,
        "backward.(root)": mm + 2 * mm,  # first matmul: dW only; last: dX and dW
        "backward.child": 2 * child,
    }


def test_work_after_the_model_is_charged_outside_in_both_phases():
    model = nn.Linear(D, D, bias=False)
    x = torch.randn(B, D)
    w = torch.randn(D, 1, requires_grad=True)
    counted = count_flops(model, lambda: (model(x) @ w).sum().backward())
    head = 2 * B * D * 1
    assert counted.flops.terms == {
        "forward.(root)": 2 * B * D * D,
        "backward.(root)": 2 * B * D * D,  # dW only
        "forward.(outside)": head,
        "backward.(outside)": 2 * head,
    }


class Stack(nn.Module):
    """Two attention layers (each checkpointed or not) between an input and an output layer."""

    def __init__(self, checkpointing: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(D_IN, D, bias=False)
        self.layers = nn.ModuleList([Attention(), Attention()])
        self.out = nn.Linear(D, 1)
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = checkpoint(layer, h, use_reentrant=False) if self.checkpointing else layer(h)
        return self.out(h)


def _count_stack(checkpointing: bool) -> dict[str, dict[str, int]]:
    torch.manual_seed(0)
    model = Stack(checkpointing)
    x = torch.randn(B, S, D_IN)
    counted = count_flops(model, lambda: model(x).sum().backward())
    return {p: counted.flops.subset(p).terms for p in ("forward", "backward", "recompute")}


def test_checkpoint_recompute_equals_forward_and_backward_is_unchanged():
    plain, ckpt = _count_stack(False), _count_stack(True)
    proj = 2 * B * S * D * D
    attn_own = 2 * (2 * B * S * S * D)
    layers = {f"layers.{p}_proj": 2 * proj for p in "qkvo"} | {"layers": 2 * attn_own}
    assert plain["recompute"] == {}
    assert ckpt["forward"] == plain["forward"]
    assert ckpt["recompute"] == layers  # the checkpointed modules only, once each
    assert ckpt["backward"] == plain["backward"]
    assert plain["backward"] == {
        "inp": 2 * B * S * D_IN * D,  # dW only
        "out": 2 * (2 * B * S * D * 1),
        **{name: 2 * n for name, n in layers.items()},
    }


REFERENCE_CASES = [
    "gpt train eager",
    "gpt train checkpointing",
    "llama gqa train eager",
    "t5 train",
    "vaswani train",
]


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_reference_model_backward_and_recompute_rows_equal_the_estimator(name):
    from tgauge.matrix import cases
    from tgauge.validate import validate_point

    case = next(c for c in cases() if c.name == name)
    point = validate_point(case.spec, case.workload)
    rows = [r for r in point.rows if r.term.startswith(("flops.backward.", "flops.recompute."))]
    assert any(r.term.startswith("flops.backward.") for r in rows)
    if "checkpointing" in name:
        assert any(r.term.startswith("flops.recompute.") for r in rows)
    wrong = [(r.term, r.predicted, r.measured) for r in rows if r.measured != r.predicted]
    assert wrong == []
