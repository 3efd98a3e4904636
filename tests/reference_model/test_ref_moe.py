"""Mixture of experts in the reference model (reference_model/moe.py; issue 22e): the
estimator's parameters, gradients, optimizer states, FLOPs, every saved-activation term, the KV
cache and the peaks against the measurement (tgauge.validate.validate_point, which forces the
routers to the routing the estimate assumes, Workload.routing), at fixed points and a seeded
random draw (train, prefill, decode; eager and fused; b = 1 and more, a long-ish s; shared
experts, dense layers, sigmoid scores, no renormalisation, uniform and worst routing)."""

from __future__ import annotations

import random

import pytest
import torch
from ref_specs import GPT, LLAMA, check_rows, fixed_params, spec, workload

from estimator import estimate
from estimator.shapes import resolve
from estimator.spec import UnsupportedError, Workload
from reference_model import build_model
from reference_model.moe import MoE, force_routing
from tgauge.comparison import TOLERANCES
from tgauge.validate import validate_point

#: MoE fields: without them, a point's dense twin
MOE_FIELDS = ("n_experts", "n_experts_per_token", "expert_d_ff", "n_shared_experts",
              "dense_layers", "router_scoring", "router_norm_topk")  # fmt: skip
BASES = {"gpt": GPT, "llama": LLAMA}
MOE = dict(n_experts=4, n_experts_per_token=2, expert_d_ff=24)


def _residual(base: str, extra: dict, wl: Workload) -> int:
    """predicted - measured training peak of the same spec without experts: the residual of
    the dense reference rules (e.g. 8 B of the eager llama backward, 508 B of the fused one
    at b = 2, s = 32), which the MoE blocks' rules are not to add to."""
    dense = {k: v for k, v in extra.items() if k not in MOE_FIELDS}
    point = validate_point(spec(**{**BASES[base], **dense}), wl, device="cpu")
    (row,) = [r for r in point.rows if r.term == "peak_memory"]
    return row.predicted - row.measured


def _check(base: str, extra: dict, wl: Workload) -> None:
    """Every row of the point exact, but the training peak: within the tolerance and off by
    no more than its dense twin's (``_residual``); inference peaks exact."""
    point = validate_point(spec(**{**BASES[base], **MOE, **extra}), wl, device="cpu")

    def peak(r) -> None:
        if wl.mode != "train":
            assert r.predicted == r.measured, r
            return
        assert r.rel_error <= TOLERANCES["peak_memory"], r
        if r.predicted != r.measured:
            assert abs(r.predicted - r.measured) <= abs(_residual(base, extra, wl)), r

    check_rows(point, wl, peak)
    assert point.peak_phase_predicted == point.peak_phase_measured
    if wl.mode == "train" and wl.checkpointing == "none":
        rows = {r.term: r for r in point.rows}
        assert rows["memory.activations.decoder.layers.ffn.experts"].measured > 0


SHARED_DENSE = {"n_shared_experts": 1, "dense_layers": (0,), "n_decoder_layers": 3}
SIGMOID = {"router_scoring": "sigmoid", "router_norm_topk": False}
FIXED = [  # (base, extra spec fields, workload, slow)
    ("llama", SHARED_DENSE, workload("train", 2, 8, "eager", optimizer="none"), False),
    ("llama", SHARED_DENSE, workload("train", 1, 24, "fused", routing="worst"), True),
    ("llama", {}, workload("train", 2, 8, "eager"), True),
    ("gpt", SIGMOID, workload("prefill", 2, 16, "eager"), False),
    ("llama", SHARED_DENSE, workload("prefill", 1, 64, "fused"), False),
    ("llama", {}, workload("decode", 1, 12, "fused"), False),
    ("llama", SHARED_DENSE, workload("decode", 3, 10, "eager", routing="worst"), True),
    ("llama", SHARED_DENSE, workload("train", 2, 8, "eager", checkpointing="full"), True),
    ("llama", {"n_shared_experts": 2}, workload("train", 2, 8, "eager", dropout=0.1), True),
    ("llama", SIGMOID, workload("train", 1, 48, "eager", checkpointing="selective"), True),
]


@pytest.mark.parametrize(
    "base,extra,wl",
    fixed_params(FIXED),
)
def test_moe_matches_measurement(base, extra, wl) -> None:
    _check(base, extra, wl)


def _draw(rng: random.Random) -> tuple[str, dict, Workload]:
    """A seeded point: experts, top-k, expert width, shared experts, dense layers, scores,
    renormalisation, routing, mode, attention, b and s."""
    E = rng.choice([2, 3, 4, 6])
    extra = {
        "n_experts": E,
        "n_experts_per_token": rng.randint(1, min(E, 3)),
        "expert_d_ff": rng.choice([16, 24, 40]),
        "n_shared_experts": rng.choice([0, 0, 1, 2]),
        "dense_layers": rng.choice([(), (0,), (1,)]),
        "router_scoring": rng.choice(["softmax", "sigmoid"]),
        "router_norm_topk": rng.choice([None, False, True]),
    }
    mode = rng.choice(["train", "train", "prefill", "decode"])
    kw = {"routing": rng.choice(["uniform", "worst"])}
    if mode == "train":
        kw |= rng.choice([{}, {"optimizer": "none"}, {"checkpointing": "full"}])
    b, s = rng.choice([1, 2, 3]), rng.choice([8, 12, 17, 32])
    return "llama", extra, workload(mode, b, s, rng.choice(["eager", "fused"]), **kw)


@pytest.mark.parametrize(
    "seed",
    [pytest.param(i, marks=[] if i == 1 else [pytest.mark.slow]) for i in range(10)],
)
def test_moe_random_points(seed) -> None:
    base, extra, wl = _draw(random.Random(2222 + seed))
    _check(base, extra, wl)


def _moe_spec(**kw):
    return spec(**{**LLAMA, **MOE, "n_shared_experts": 1, **kw})


@pytest.mark.parametrize("routing", ["uniform", "worst"])
def test_forced_routing_gives_the_estimators_expert_counts(routing) -> None:
    """reference_model.moe.force_routing routes as estimator/rules/reference/moe.py
    expert_counts assumes, token counts per expert included (b = 3, s = 5: k n = 30 pairs
    over 4 experts, 8, 8, 7, 7 under uniform)."""
    from estimator.rules.reference.moe import expert_counts

    s = _moe_spec()
    wl = Workload(mode="prefill", batch_size=3, seq_len=5, routing=routing)
    model = build_model(s, wl)
    force_routing(model, routing)
    seen: list[list[int]] = []
    router = model.decoder.layers[0].ffn.router
    router.register_forward_hook(
        lambda mod, args, out: seen.append(torch.bincount(out[1].flatten(), minlength=4).tolist())
    )
    with torch.no_grad():
        model(torch.randint(0, s.vocab_size, (3, 5)))
    assert seen == [expert_counts(s, resolve(s, wl), 15)]
    assert all(len(set(row.tolist())) == 2 for row in _topk(router, 15))  # distinct experts


def _topk(router, n: int) -> torch.Tensor:
    return router(torch.randn(n, router.weight.shape[1]))[1]


def test_moe_block_is_the_weighted_sum_of_its_experts() -> None:
    """y_t = sum_j w_tj FFN_{idx_tj}(x_t) + shared(x_t), w the top-k scores renormalised
    (reference_model/moe.py), against a per-token loop."""
    torch.manual_seed(0)
    model = build_model(_moe_spec())
    moe = model.decoder.layers[1].ffn
    assert isinstance(moe, MoE)
    x = torch.randn(2, 5, 32)
    scores = (x.view(-1, 32) @ moe.router.weight.T).softmax(-1)
    top, idx = scores.topk(2, dim=-1)
    top = top / top.sum(-1, keepdim=True)
    want = torch.stack(
        [
            sum(top[t, j] * moe.experts[int(idx[t, j])](x.view(-1, 32)[t]) for j in range(2))
            + moe.shared(x.view(-1, 32)[t])
            for t in range(10)
        ]
    )
    torch.testing.assert_close(moe(x).view(-1, 32), want)


def test_every_expert_gets_gradients_when_no_token_reaches_it() -> None:
    """Under 'worst' routing experts 2 and 3 get no token: they still run (an empty batch),
    so their weights get zero gradients, as the estimator counts every expert's."""
    s = _moe_spec()
    model = build_model(s)
    force_routing(model, "worst")
    out = model(torch.randint(0, s.vocab_size, (2, 6)), labels=torch.zeros(2, 6, dtype=torch.long))
    out.loss.backward()
    unused = model.decoder.layers[0].ffn.experts[3].down.weight.grad
    assert unused is not None and not unused.any()
    assert all(p.grad is not None for p in model.parameters())


def test_saved_activations_do_not_depend_on_the_routing() -> None:
    """What the experts save adds up to k n tokens whichever experts they pick: the
    activation terms of 'uniform' and 'worst' are the same, a prefill's peak is not."""
    s = _moe_spec(n_experts=6, expert_d_ff=64)
    base = dict(mode="train", batch_size=4, seq_len=32, optimizer="none")
    uniform = estimate(s, Workload(**base, routing="uniform"))
    worst = estimate(s, Workload(**base, routing="worst"))
    acts = {k: v for k, v in uniform.memory.terms.items() if k.startswith("activations")}
    assert acts == {k: v for k, v in worst.memory.terms.items() if k.startswith("activations")}
    prefill = dict(base, mode="prefill")  # a no-grad pass holds one expert's batch at a time
    assert (
        estimate(s, Workload(**prefill, routing="worst")).peak_memory_bytes
        > estimate(s, Workload(**prefill, routing="uniform")).peak_memory_bytes
    )


@pytest.mark.parametrize(
    "fields,workload,match",
    [
        ({}, {"autocast": "bf16"}, "autocast='bf16' is not modelled for a mixture of experts"),
        ({}, {"finetune": "lora"}, "finetune='lora' on a mixture of experts"),
        ({"router_fp32": True}, {}, "router_fp32=True: not built by the reference model"),
        ({"shared_expert_gate": True}, {}, "shared_expert_gate=True: not built"),
    ],
)
def test_what_is_not_built_or_measured_is_refused_by_name(fields, workload, match) -> None:
    s = _moe_spec(**fields)
    with pytest.raises(UnsupportedError, match=match):
        estimate(s, Workload(mode="train", batch_size=1, seq_len=8, **workload))


def test_reference_model_and_ranks_refuse_what_they_do_not_build() -> None:
    from estimator.spec.parallel import Parallel

    with pytest.raises(UnsupportedError, match="does not build router_fp32=True"):
        build_model(_moe_spec(router_fp32=True), device="meta")
    with pytest.raises(UnsupportedError, match="parallel= with n_experts=4"):
        estimate(_moe_spec(), Workload(mode="train", batch_size=1, seq_len=8),
                 parallel=Parallel(world=2, shard="zero3"))  # fmt: skip


def test_cli_routing_reaches_the_estimate(tmp_path) -> None:
    """`tgauge estimate SPEC --routing worst` estimates under that routing and says so."""
    import json

    from typer.testing import CliRunner

    from tgauge.cli import app

    path = tmp_path / "moe.json"
    path.write_text(_moe_spec().model_dump_json(exclude_defaults=True))
    args = ["estimate", str(path), "--mode", "prefill", "-b", "2", "-s", "8", "--json"]
    out = json.loads(CliRunner().invoke(app, [*args, "--routing", "worst"]).output)
    assert out["workload"]["routing"] == "worst"
    assert any("routing='worst'" in line for line in out["unchecked"])
