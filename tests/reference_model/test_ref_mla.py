"""Multi-head latent attention (DeepSeek-V2/V3: spec.kv_lora_rank, reference_model/mla.py) in
the reference model: the estimator's parameters, FLOPs, every saved-activation term, the KV
cache and the peaks against the measurement (tgauge.validate.validate_point) in train, prefill
and decode, at fixed points (b = 1 and more, a long-ish s) and seeded random draws; the module
against transformers' DeepseekV3Attention on the same weights; the latent cache's bytes."""

from __future__ import annotations

import random

import pytest
import torch
from ref_specs import LLAMA, check_rows, spec, workload

from estimator.spec import UnsupportedError, Workload
from reference_model import build_model
from tgauge.comparison import TOLERANCES
from tgauge.validate import validate_point

#: the training peak's residual: 0-dim tensors (the loss, optimizer scalars), as the matrix's
#: activation-dominated cases (tests/tgauge/test_validation_matrix.py SCALAR_BYTES; measured:
#: 8 B at every point below); the inference replay is exact
SCALAR_BYTES = 16
#: DeepSeek-V3's shape, scaled down: h = 4, d_qk = 8 + 4 = 12, d_v = 6, r_kv = 16, r_q = 24
MLA = dict(
    LLAMA,
    head_dim=12,
    kv_lora_rank=16,
    q_lora_rank=24,
    qk_rope_head_dim=4,
    qk_nope_head_dim=8,
    v_head_dim=6,
)


def _check(extra: dict, wl: Workload) -> None:
    """Every row of the point: exact, the training peak within SCALAR_BYTES, the inference
    peak exact, the peak's phase the measured one."""
    point = validate_point(spec(**{**MLA, **extra}), wl, device="cpu")

    def peak(r) -> None:
        assert r.rel_error <= TOLERANCES["peak_memory"], r
        limit = SCALAR_BYTES if wl.mode == "train" else 0
        assert abs(r.predicted - r.measured) <= limit, r

    check_rows(point, wl, peak)
    assert point.peak_phase_predicted == point.peak_phase_measured
    if wl.mode == "train":
        assert any(r.term.endswith("self_attn.kv_b_proj") and r.measured for r in point.rows)
    if wl.mode == "decode":
        assert any(r.term == "kv_cache.decoder.layers.self_attn" for r in point.rows)


FIXED = [  # (extra spec fields, workload, slow)
    ({}, workload("train", 2, 16, "eager"), False),
    ({}, workload("train", 1, 16, "fused"), False),
    ({"q_lora_rank": None}, workload("train", 3, 8, "fused"), True),
    ({"v_head_dim": 12}, workload("train", 2, 12, "fused"), True),  # d_v = d_qk: no padding
    ({}, workload("prefill", 2, 16, "eager"), False),
    ({}, workload("decode", 1, 12, "fused"), False),
    ({"q_lora_rank": None}, workload("decode", 2, 12, "eager"), False),
    ({"max_seq_len": 128}, workload("train", 1, 96, "eager"), False),  # long-ish s, b = 1
    ({"max_seq_len": 128}, workload("train", 1, 96, "fused"), True),
    ({}, workload("train", 2, 16, "eager", checkpointing="full"), True),
    ({}, workload("train", 2, 16, "fused", dtype="bf16"), True),
    ({"n_heads": 1}, workload("train", 3, 8, "eager"), True),  # h = 1: the merges are views
]


@pytest.mark.parametrize(
    "extra,wl",
    [
        pytest.param(
            e,
            w,
            id=f"{w.mode}-{w.attention_impl}-b{w.batch_size}-s{w.seq_len}-{i}",
            marks=[pytest.mark.slow] if slow else [],
        )  # fmt: skip
        for i, (e, w, slow) in enumerate(FIXED)
    ],
)
def test_latent_attention_matches_measurement(extra, wl) -> None:
    _check(extra, wl)


#: DeepSeek's layout: latent attention and a mixture of experts with a shared expert, the
#: first layer dense (reference_model/moe.py, issue 22e)
DEEPSEEK = {"n_experts": 4, "n_experts_per_token": 2, "expert_d_ff": 24, "n_shared_experts": 1,
            "n_decoder_layers": 3, "dense_layers": (0,)}  # fmt: skip


@pytest.mark.parametrize(
    "wl",
    [
        workload("train", 2, 16, "eager"),
        pytest.param(workload("decode", 2, 12, "fused"), marks=pytest.mark.slow),
    ],
    ids=["train-eager", "decode-fused"],
)
def test_latent_attention_with_experts_matches_measurement(wl) -> None:
    _check(DEEPSEEK, wl)


def test_decode_step_peak_matches_measurement_when_the_cache_outgrows_the_prefill() -> None:
    """A 2-token prompt and 8 new tokens on 3 layers: the last step's replay (the cache's
    torch.cat of the latent and k_rot, kv_b_proj over every cached position) is the peak."""
    wl = Workload(mode="decode", batch_size=2, seq_len=2, new_tokens=8, attention_impl="fused")
    point = validate_point(spec(**{**MLA, "n_decoder_layers": 3}), wl, device="cpu")
    peak = next(r for r in point.rows if r.term == "peak_memory")
    assert peak.verdict == "exact", peak
    assert point.peak_phase_predicted == point.peak_phase_measured == "decode"


def _draw(rng: random.Random) -> tuple[dict, Workload]:
    mode = rng.choice(["train", "train", "prefill", "decode"])
    impl = rng.choice(["eager", "fused"])
    b, s = rng.choice([1, 2, 3]), rng.choice([8, 12, 16, 24])
    kw: dict = {}
    if mode == "train":
        kw = rng.choice([{}, {"dtype": "bf16"}, {"checkpointing": "full"}])
    h = rng.choice([1, 2, 4])
    nope, rope = rng.choice([(8, 4), (6, 2), (4, 4)])
    extra = {
        "n_heads": h,
        "head_dim": nope + rope,
        "qk_nope_head_dim": nope,
        "qk_rope_head_dim": rope,
        "v_head_dim": rng.choice([4, 6, nope + rope]),
        "kv_lora_rank": rng.choice([8, 16]),
        "q_lora_rank": rng.choice([None, 12, 24]),
        "qkv_bias": rng.choice([False, True]),
        "o_bias": rng.choice([False, True]),
    }
    return extra, workload(mode, b, s, impl, **kw)


@pytest.mark.parametrize(
    "seed", [pytest.param(i, marks=[pytest.mark.slow] if i >= 3 else []) for i in range(10)]
)
def test_latent_attention_random_points(seed) -> None:
    extra, wl = _draw(random.Random(2230 + seed))
    _check(extra, wl)


@pytest.mark.parametrize("impl", ["eager", "fused"])
def test_kv_decode_matches_full_forward(impl) -> None:
    """Prefill + one-token steps through the latent cache give the full forward's logits."""
    torch.manual_seed(0)
    model = build_model(spec(**MLA), Workload(attention_impl=impl)).eval()
    ids = torch.randint(0, 61, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        steps = [model.prefill(ids[:, :6], cache)]
        steps += [model.decode_step(ids[:, i : i + 1], cache) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_matches_transformers_deepseek_v3_attention_on_the_same_weights() -> None:
    """reference_model/mla.py LatentAttention equals transformers' DeepseekV3Attention (eager,
    rope_interleave=False: the rotate-half layout) on copied weights and a causal mask."""
    pytest.importorskip("transformers")
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    s_ = spec(**{**MLA, "norm_eps": 1e-6})  # DeepseekV3RMSNorm's default eps in the attention
    cfg = DeepseekV3Config(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24,
        kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6,
        rope_interleave=False, attention_bias=False, rms_norm_eps=1e-6, max_position_embeddings=64,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = build_model(s_)
    ours = model.decoder.layers[0].self_attn
    theirs = ds.DeepseekV3Attention(cfg, layer_idx=0)
    names = {"q_a_layernorm": "q_a_norm", "kv_a_proj_with_mqa": "kv_a_proj",
             "kv_a_layernorm": "kv_a_norm"}  # fmt: skip
    mine = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            module, leaf = name.rsplit(".", 1)
            p.copy_(mine[f"{names.get(module, module)}.{leaf}"])
    x = torch.randn(2, 7, 32)
    positions = torch.arange(7)[None]
    cos_sin = ds.DeepseekV3RotaryEmbedding(cfg)(x, positions)
    mask = torch.full((7, 7), torch.finfo(x.dtype).min).triu(1)[None, None]  # causal additive
    want, _ = theirs(x, cos_sin, mask)
    got = ours(x, start=0, pos=model.decoder.pos)
    torch.testing.assert_close(got, want)


def test_latent_cache_holds_kv_lora_rank_plus_rope_dim_per_token_and_layer() -> None:
    """The reference model caches the normed latent and the rotated k_rot: (r_kv + d_rope)
    values per token and layer, the number of estimator/terms/kv_cache.py (the same as vLLM's
    and transformers 5's DeepseekV3Attention: all three cache the latent)."""
    from estimator.terms.kv_cache import mla_latent_bytes_per_token

    s_ = spec(**MLA)
    model = build_model(s_).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model.prefill(torch.randint(0, 61, (3, 5)), cache)
    per_token = cache.nbytes() // (3 * 5)
    assert per_token == mla_latent_bytes_per_token(s_, "fp32") == 2 * (16 + 4) * 4
    layer = cache.layers[0]
    assert layer.self_k.shape == (3, 1, 5, 16) and layer.self_v.shape == (3, 1, 5, 4)


def test_what_is_not_built_or_modelled_is_refused_by_name() -> None:
    """The reference model refuses latent attention with LayerNorm or in an encoder; the
    estimator refuses the runs its latent-attention rules do not model, naming them."""
    from estimator import estimate
    from estimator.spec.parallel import Parallel

    with pytest.raises(UnsupportedError, match="norm='layernorm'"):
        build_model(spec(**{**MLA, "norm": "layernorm"}))
    with pytest.raises(UnsupportedError, match="arch='encoder'"):
        build_model(spec(**{**MLA, "arch": "encoder", "lm_head": True}))
    with pytest.raises(UnsupportedError, match="checkpointing='selective'"):
        build_model(spec(**MLA), Workload(checkpointing="selective"))
    mla = spec(**MLA)
    for kw, name in [
        ({"autocast": "bf16"}, "autocast='bf16'"),
        ({"dropout": 0.1}, "dropout=0.1"),
        ({"checkpointing": "selective"}, "checkpointing='selective'"),
        ({"attention_pattern": "sliding_window", "window": 4}, "attention_pattern="),
        ({"finetune": "lora"}, "finetune='lora'"),
        ({"mode": "decode", "prompt_len": 4, "new_tokens": 2, "kv_cache_dtype": "fp8"},
         "kv_cache_dtype='fp8'"),
    ]:  # fmt: skip
        with pytest.raises(UnsupportedError, match=name):
            estimate(mla, Workload(batch_size=2, seq_len=8, **kw))
    with pytest.raises(UnsupportedError, match="kv_lora_rank=16"):
        estimate(mla, Workload(batch_size=2, seq_len=8), parallel=Parallel(world=2, shard="zero3"))
