"""Mixture of experts (Shazeer et al. 2017; Fedus et al. 2022; Jiang et al. 2024, Mixtral): a
layer's FFN replaced by a router and ``n_experts`` FFNs of ``expert_d_ff``, each token running
``n_experts_per_token`` (k) of them, weighted by the router, plus a shared FFN every token runs
(DeepSeek's shared experts: one FFN of ``shared_expert_d_ff``). The layers of
``spec.dense_layers`` keep the dense FFN (DeepSeek's first_k_dense_replace).

    scores  = softmax(x W_r^T) | sigmoid(x W_r^T)       [n, E]   (spec.router_scoring)
    w, idx  = top-k(scores)                             [n, k]
    w       = w / sum(w)   (unless router_norm_topk is False)
    y_t     = sum_j w[t, j] * FFN_{idx[t, j]}(x_t)  (+ shared(x_t))

The experts run as transformers' eager loop (modeling_mixtral.MixtralExperts.forward): for each
expert, the (token, slot) pairs routed to it (``torch.where``), its FFN on those tokens
(``x[token]``), times their weights, added back with ``index_add_``. Unlike that loop every
expert runs, one no token picked on an empty batch, so every expert's weights get a gradient
(zeros) and optimizer states in every step, as the estimator counts them.

The tensors an expert saves are sized by the tokens routed to it, so what is saved in all adds
up to k n tokens whichever experts they pick; what is live at a moment (the peaks) depends on
the routing. ``force_routing`` (a validation hook, tgauge/validate.py) overwrites the top-k
indices in place with the routing the estimate assumes (Workload.routing), allocating nothing:
the run's memory is that of a router choosing so.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from estimator.spec import ModelSpec
from reference_model.ffn import _ACTIVATIONS, FeedForward


def is_moe_layer(spec: ModelSpec, stack: str, i: int) -> bool:
    """Whether layer ``i`` of ``stack`` runs a mixture of experts (not in dense_layers)."""
    return stack == "decoder" and spec.n_experts > 0 and i not in spec.dense_layers


class ExpertFFN(FeedForward):
    """One expert (or the shared one): FeedForward's forward over a width ``d_ff``, no biases
    (transformers' MixtralExperts / DeepseekV3MLP); registers up, gate, down as FeedForward."""

    def __init__(self, spec: ModelSpec, d_ff: int) -> None:
        nn.Module.__init__(self)
        d = spec.d_model
        self.up = nn.Linear(d, d_ff, bias=False)
        self.gate = nn.Linear(d, d_ff, bias=False) if spec.gated else None
        self.act = _ACTIVATIONS[spec.activation]()
        self.down = nn.Linear(d_ff, d, bias=False)


class Router(nn.Module):
    """weights, idx = top-k(softmax | sigmoid(x W^T)) over the experts, renormalised to sum 1
    (unless ``router_norm_topk`` is False). ``forced``: a validation hook (force_routing)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(spec.n_experts, spec.d_model))
        self.k = spec.n_experts_per_token
        self.sigmoid = spec.router_scoring == "sigmoid"
        self.renorm = spec.router_norm_topk is not False
        self.forced: str | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(x, self.weight)  # [n, d] -> [n, E]
        scores = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
        weights, idx = scores.topk(self.k, dim=-1)  # [n, k] each
        if self.forced is not None:
            _force(idx, self.forced, self.weight.shape[0], self.k)
        if self.renorm:
            weights = weights / weights.sum(dim=-1, keepdim=True)  # [n, k] / [n, 1]
        return weights, idx


def _force(idx: torch.Tensor, routing: str, n_experts: int, k: int) -> None:
    """Overwrite the top-k indices [n, k] in place, through ``.data`` (no new storage, and the
    version autograd checks is untouched): pair p = t k + j goes to expert p mod E ('uniform':
    every expert gets k n / E pairs, the first (k n mod E) one more) or p mod k ('worst': every
    token on experts 0..k-1, the largest batch an expert can get)."""
    flat = idx.data.view(-1)
    torch.arange(flat.numel(), out=flat)
    flat.remainder_(n_experts if routing == "uniform" else k)


def _pairs(idx: torch.Tensor, e: int, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, slot) of the pairs routed to expert e: torch.where(idx == e). On the meta
    device (no data, no nonzero) expert e gets the 'uniform' share of the k n pairs."""
    if idx.is_meta:
        m = (idx.numel() + n_experts - 1 - e) // n_experts
        return idx.new_empty(m), idx.new_empty(m)
    return torch.where(idx == e)


class Experts(nn.ModuleList):
    """The routed experts (a ModuleList: their parameters are ``experts.<e>.up`` etc.) and the
    eager loop that runs them (module docstring)."""

    def forward(self, x: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)  # [n, d]
        for e, expert in enumerate(self):
            token, slot = _pairs(idx, e, len(self))  # the n_e pairs routed to e: [n_e] each
            y = expert(x[token]) * weights[token, slot].unsqueeze(1)  # [n_e, d] * [n_e, 1]
            out.index_add_(0, token, y.to(out.dtype))  # [n, d] += y at the tokens' rows
        return out


class MoE(nn.Module):
    """The mixture-of-experts FFN of one layer: router, experts, shared FFN (if any)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        check_built(spec)
        self.router = Router(spec)
        self.experts = Experts(ExpertFFN(spec, spec.expert_d_ff) for _ in range(spec.n_experts))
        if spec.shared_expert_d_ff:
            self.shared = ExpertFFN(spec, spec.shared_expert_d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, x.shape[-1])  # [b, s, d] -> [n, d] (a view)
        weights, idx = self.router(h)
        y = self.experts(h, weights, idx)
        if hasattr(self, "shared"):
            y = y + self.shared(h)
        return y.view_as(x)


def force_routing(model: nn.Module, routing: str) -> None:
    """Make every router of ``model`` route as ``routing`` ('uniform' or 'worst', _force)."""
    for module in model.modules():
        if isinstance(module, Router):
            module.forced = routing


#: MoE fields the reference model does not build, with their default (refused by name)
UNBUILT = {
    "router_fp32": False,
    "router_groups": None,
    "router_topk_groups": None,
    "shared_expert_gate": False,
}


def check_built(spec: ModelSpec) -> None:
    """Refuse by name the MoE fields whose code the reference model does not have."""
    from estimator.spec import UnsupportedError

    found = [f"{f}={getattr(spec, f)!r}" for f, v in UNBUILT.items() if getattr(spec, f) != v]
    if found:
        raise UnsupportedError(
            f"the reference model does not build {', '.join(found)} ({spec.name}); "
            "measure the Hugging Face class (validate --hf)"
        )
