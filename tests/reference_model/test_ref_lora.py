"""LoRA and freezing in the reference model (issue 20): the wrapped linear computes what peft's
lora.Linear computes on the same weights, adapters are fp32 on a 16-bit base, only they train;
freeze patterns freeze exactly the matching parameter terms; qlora is refused by name."""

from __future__ import annotations

import pytest
import torch
from ref_specs import GPT, LLAMA, spec

from estimator.spec import UnsupportedError, Workload
from reference_model import build_model
from reference_model.inputs import make_inputs
from reference_model.lora import LoraLinear, term_name
from reference_model.train import make_optimizer, train_step

LORA = dict(mode="train", finetune="lora", lora_rank=4, lora_alpha=8)


def _wrapped(model) -> dict[str, LoraLinear]:
    return {term_name(p): m for p, m in model.named_modules() if isinstance(m, LoraLinear)}


@pytest.mark.parametrize(
    ("arch", "targets", "want"),
    [
        (GPT, None, {"q_proj", "v_proj"}),  # peft's default: q and v
        (LLAMA, ("q", "k", "v", "o", "gate", "up", "down"),
         {"q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down"}),
        (LLAMA, ("k_proj", "o_proj", "down_proj"), {"k_proj", "o_proj", "down"}),
    ],
)  # fmt: skip
def test_targets_wrap_the_named_linears_and_only_adapters_train(arch, targets, want) -> None:
    s = spec(**arch)
    w = Workload(**LORA, **({"lora_targets": targets} if targets else {}))
    model = build_model(s, w)
    wrapped = _wrapped(model)
    assert {name.rsplit(".", 1)[-1] for name in wrapped} == want
    n_wrapped = sum(isinstance(m, LoraLinear) for m in model.modules())
    assert n_wrapped == len(want) * s.n_decoder_layers
    trainable = {term_name(p.rsplit(".", 1)[0]) for p, t in model.named_parameters()
                 if t.requires_grad}  # fmt: skip
    assert trainable == {f"{n}.{part}" for n in wrapped for part in ("lora_A", "lora_B")}


def test_adapters_are_fp32_on_a_bf16_base_and_start_at_the_base_output() -> None:
    s = spec(**LLAMA)
    w = Workload(**LORA, dtype="bf16")
    torch.manual_seed(0)
    model = build_model(s, w)
    q = model.decoder.layers[0].self_attn.q_proj
    assert q.weight.dtype == torch.bfloat16 and not q.weight.requires_grad
    assert q.lora_A.weight.dtype == q.lora_B.weight.dtype == torch.float32
    assert torch.count_nonzero(q.lora_B.weight) == 0  # peft: B = 0, A kaiming-uniform
    x = torch.randn(3, 5, s.d_model, dtype=torch.bfloat16)
    out = q(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.nn.functional.linear(x, q.weight, q.bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wrapped_linear_matches_peft_lora_linear(dtype) -> None:
    """The same base and adapter weights through peft's get_peft_model (its lora.Linear,
    autocast_adapter_dtype upcasting 16-bit adapters) and through LoraLinear: equal."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 24).to(dtype)
    ours = LoraLinear(base, r=4, alpha=8, dropout=0.0)
    torch.nn.init.normal_(ours.lora_B.weight)  # nonzero, so the path shows
    holder = torch.nn.Module()
    holder.proj = torch.nn.Linear(16, 24).to(dtype)
    holder.proj.load_state_dict(base.state_dict())
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["proj"])
    theirs = peft.get_peft_model(holder, config).base_model.model.proj
    assert theirs.lora_A["default"].weight.dtype == torch.float32
    theirs.lora_A["default"].weight.data.copy_(ours.lora_A.weight)
    theirs.lora_B["default"].weight.data.copy_(ours.lora_B.weight)
    x = torch.randn(2, 7, 16, dtype=dtype)
    assert torch.equal(ours(x), theirs(x))


def test_lora_dropout_drops_inside_lora_a_in_training_only() -> None:
    torch.manual_seed(0)
    ours = LoraLinear(torch.nn.Linear(16, 16), r=4, alpha=4, dropout=0.5)
    torch.nn.init.normal_(ours.lora_B.weight)
    x = torch.randn(64, 16)
    base = torch.nn.functional.linear(x, ours.weight, ours.bias)
    ours.eval()
    plain = base + ours.lora_B(x @ ours.lora_A.weight.T)
    assert torch.allclose(ours(x), plain)
    ours.train()
    assert not torch.allclose(ours(x), plain)


def test_a_lora_training_step_updates_only_the_adapters() -> None:
    s = spec(**GPT)
    w = Workload(**LORA, batch_size=2, seq_len=8, optimizer="adamw")
    torch.manual_seed(0)
    model = build_model(s, w)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, w)
    for _ in range(2):
        train_step(model, make_inputs(s, w), opt)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_A." in n or ".lora_B." in n for n in changed)


def test_freeze_patterns_freeze_the_matching_terms() -> None:
    s = spec(**LLAMA)
    w = Workload(mode="train", finetune="freeze", frozen=("embed", "decoder.layers.ffn.*"))
    model = build_model(s, w)
    for path, p in model.named_parameters():
        name = term_name(path.rsplit(".", 1)[0])
        assert p.requires_grad == (name != "embed" and not name.startswith("decoder.layers.ffn."))


def test_qlora_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedError, match="qlora"):
        build_model(spec(**LLAMA), Workload(mode="train", finetune="qlora", dtype="bf16"))
