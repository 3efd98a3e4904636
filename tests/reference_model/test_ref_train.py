"""Training: a tiny model learns to reverse sequences; LR schedule shape; optimizers;
full activation checkpointing == no checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
from ref_specs import BART, BERT, GPT, LLAMA, VIT, spec

from estimator.spec import Workload
from reference_model import build_model
from reference_model.inputs import make_inputs
from reference_model.train import make_optimizer, train_step, warmup_decay


def test_tiny_decoder_learns_reverse_far_below_chance() -> None:
    """Sequences [x_1..x_k, SEP, x_k..x_1]; loss only on the reversed half (-100 elsewhere)."""
    torch.manual_seed(0)
    k, vocab = 6, 12  # tokens 1..10, SEP = 11
    s = spec(**LLAMA, vocab_size=vocab, n_decoder_layers=2, d_model=64, d_ff=128)
    model = build_model(s)
    opt = make_optimizer(model, Workload(optimizer="adamw"), lr=3e-3)
    sched = warmup_decay(opt, 20, 400)
    loss = float("inf")
    for _ in range(400):
        x = torch.randint(1, vocab - 1, (32, k))
        seq = torch.cat([x, torch.full((32, 1), vocab - 1), x.flip(1)], dim=1)  # [32, 2k+1]
        labels = seq.clone()
        labels[:, : k + 1] = -100  # predict only the reversed half
        loss = train_step(model, {"input_ids": seq, "labels": labels}, opt)
        sched.step()
    assert loss < 0.05 * math.log(vocab)


def test_warmup_decay_schedule_values() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    for decay, mid in [("linear", 0.5), ("cosine", 0.5)]:
        opt = torch.optim.SGD([p], lr=2.0)
        sched = warmup_decay(opt, 10, 110, decay)
        lrs = []
        for _ in range(111):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[0] == 0.0
        assert lrs[5] == pytest.approx(1.0)  # linear warmup halfway
        assert lrs[10] == pytest.approx(2.0)  # end of warmup: the peak
        assert lrs[60] == pytest.approx(2.0 * mid)  # halfway through the decay
        assert lrs[110] == pytest.approx(0.0, abs=1e-12)
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


@pytest.mark.parametrize(
    "name,state",
    [
        ("adamw", {"step", "exp_avg", "exp_avg_sq"}),
        ("adam", {"step", "exp_avg", "exp_avg_sq"}),
        ("sgd", set()),
        ("sgd-momentum", {"momentum_buffer"}),
        ("none", None),
    ],
)
def test_optimizer_states_after_one_step(name, state) -> None:
    s = spec(**GPT)
    model = build_model(s)
    w = Workload(optimizer=name, batch_size=2, seq_len=8)
    opt = make_optimizer(model, w)
    loss = train_step(model, make_inputs(s, w), opt)
    assert math.isfinite(loss)
    if state is None:
        assert opt is None
        return
    states = [opt.state[p] for p in model.parameters()]
    assert all(set(st) == state for st in states)


@pytest.mark.parametrize(
    "kw", [GPT, LLAMA, BART, BERT, VIT], ids=["gpt", "llama", "bart", "bert", "vit"]
)
def test_checkpointing_full_gives_same_loss_and_gradients_as_none(kw) -> None:
    s = spec(**kw)
    w = Workload(
        batch_size=2,
        seq_len=s.n_positions if s.is_patch_input else 9,
        dropout=0.1,
        target_len=7 if s.arch == "encoder-decoder" else None,
    )
    grads, n_saved = [], []
    for ckpt in ("none", "full"):
        torch.manual_seed(0)
        model = build_model(s, w.model_copy(update={"checkpointing": ckpt}))
        torch.manual_seed(1)  # same dropout masks: checkpoint replays the RNG state
        n_saved.append(0)

        def pack(t: torch.Tensor) -> torch.Tensor:
            n_saved[-1] += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = train_step(model, make_inputs(s, w), None)
        grads.append((loss, {n: p.grad for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = grads
    assert n_saved[1] < n_saved[0]  # checkpointing really saves less for backward
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], msg=n)


def test_make_inputs_shapes_follow_workload() -> None:
    t5 = spec(**BART)
    batch = make_inputs(t5, Workload(batch_size=3, seq_len=10, target_len=4))
    assert batch["input_ids"].shape == (3, 10)
    assert batch["decoder_input_ids"].shape == batch["labels"].shape == (3, 4)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
    vit = spec(**VIT)
    assert make_inputs(vit, Workload(batch_size=2, seq_len=17))["pixel_values"].shape == (
        2,
        3,
        16,
        16,
    )
