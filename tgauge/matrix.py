"""The validation matrix: small specs across architectures, norms, positions, attention
variants and modes, small enough to measure on a CPU in seconds each.

`tgauge validate --matrix`, the accuracy tests and scripts/gpu_validate.sh all run these
cases, so the numbers in docs/validation/ come from one list. Two sections: ``cases()``
measures our reference model, ``hf_cases()`` the real Hugging Face classes of
tgauge/hf_tiny.py's configs (issue 9).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from estimator.spec import ModelSpec, Workload

# Glossary sizes of every case: d=32, h=4, d_ff=64, V=61 (big-vocab cases 4096), L=2, b=2, s=16
# (the optimizer cases b=1, s=4).
_BASE: dict[str, Any] = dict(
    d_model=32, n_heads=4, d_ff=64, vocab_size=61, max_seq_len=64, n_layers=2
)


class Case(NamedTuple):
    name: str
    spec: ModelSpec
    workload: Workload
    slow: bool = False  # measured only by `make test-all` (pytest -m slow)
    hf_config: dict[str, Any] | None = None  # the HF section: the config.json measured


def _spec(name: str, arch: str, **fields: Any) -> ModelSpec:
    return ModelSpec(name=name, arch=arch, **{**_BASE, **fields})


def _work(mode: str = "train", **fields: Any) -> Workload:
    return Workload(mode=mode, **{"batch_size": 2, "seq_len": 16, **fields})


def _step(optimizer: str, impl: str) -> Workload:
    """A training step whose peak is the optimizer's: one sequence of 4 tokens."""
    return _work(batch_size=1, seq_len=4, optimizer=optimizer, optimizer_impl=impl)


GPT = dict(position="learned")
LLAMA = dict(
    norm="rmsnorm",
    activation="swiglu",
    position="rotary",
    bias=False,
    tie_embeddings=False,
    n_kv_heads=2,
)
#: issue 22e: the reference model's mixture of experts (reference_model/moe.py)
MOE = dict(n_experts=4, n_experts_per_token=2, expert_d_ff=24, n_shared_experts=1)
T5 = dict(
    norm="rmsnorm",
    activation="relu",
    position="relative",
    bias=False,
    relative_buckets=8,
    relative_max_distance=16,
)
VASWANI = dict(norm_position="post", activation="relu", position="sinusoidal", final_norm=False)
BART = dict(
    norm_position="post", position="learned", position_offset=2, embed_norm=True, final_norm=False
)
BERT = dict(
    norm_position="post",
    n_token_types=2,
    embed_norm=True,
    final_norm=False,
    pooler=False,  # the MLM loss does not use the pooler: it would get no gradient
    lm_head=True,
)
#: issue 22l: multi-head latent attention (reference_model/mla.py), DeepSeek-V3's shape scaled
#: down: h = 4, d_qk = 8 + 4, d_v = 6, r_kv = 16, r_q = 24 (k, v decompressed per head)
MLA = dict(
    {**LLAMA, "n_kv_heads": None},
    head_dim=12,
    kv_lora_rank=16,
    q_lora_rank=24,
    qk_rope_head_dim=4,
    qk_nope_head_dim=8,
    v_head_dim=6,
)
VIT = dict(
    vocab_size=None,
    lm_head=False,
    tie_embeddings=False,
    image_size=16,
    patch_size=4,
    n_channels=3,
    pooler=True,
    max_seq_len=17,
)


def cases() -> list[Case]:
    """The base cases (s = 16: weights and optimizer states dominate the training peak),
    then the long ones (``long_cases``: activations dominate)."""
    return base_cases() + long_cases()


def long_cases() -> list[Case]:
    """Activation-dominated cases (issue 11): tiny d, s up to 512, b up to 8, where the
    [b, h, s, s] scores (eager) or the [b, s, d] tensors (fused) and their backward
    transients decide the training peak; long prompts for prefill and decode; each
    attention path (eager, fused; causal, sliding window, chunked; checkpointing)."""
    long = dict(max_seq_len=1024)
    gpt = _spec("gpt-long", "decoder", **GPT, **long)
    llama = _spec("llama-long", "decoder", **LLAMA, **long)
    t5 = _spec("t5-long", "encoder-decoder", **T5, **long)
    bert = _spec("bert-long", "encoder", **BERT, **long)

    def work(mode: str = "train", **fields: Any) -> Workload:
        return Workload(mode=mode, **{"batch_size": 1, **fields})

    chunked = dict(attention_pattern="chunked", window=48)  # 256 % 48 = 16
    window = dict(attention_pattern="sliding_window", window=64)
    # issue 22: what the reference model builds of the new families' features
    neox = _spec("neox-long", "decoder", **GPT, **long, parallel_block="two_norms")
    falcon = _spec("falcon-long", "decoder", **LLAMA, **long, parallel_block="one_norm")
    qwen = _spec("qwen-long", "decoder", **LLAMA, **long, qkv_bias=True, embed_scale=True)
    mla = _spec("mla-long", "decoder", **MLA, **long)  # issue 22l
    # issue 22e: a mixture of experts, a dense first layer and a shared expert (DeepSeek's)
    moe = _spec("moe-long", "decoder", **LLAMA, **long, **MOE, n_layers=3, dense_layers=(0,))
    return [
        Case("mla long train eager s=256", mla, work(seq_len=256)),
        Case(
            "mla long train fused s=256 b=2",
            mla,
            work(seq_len=256, batch_size=2, attention_impl="fused"),
        ),
        Case("mla long decode prompt 256", mla, work("decode", seq_len=256, new_tokens=4)),
        Case("moe long train eager s=256", moe, work(seq_len=256), slow=True),
        Case(
            "moe long train fused worst routing s=256 b=2",
            moe,
            work(seq_len=256, batch_size=2, attention_impl="fused", routing="worst"),
            slow=True,
        ),
        Case("moe long prefill s=512", moe, work("prefill", seq_len=512), slow=True),
        Case("neox long train parallel eager s=256", neox, work(seq_len=256), slow=True),
        Case(
            "falcon long train parallel fused s=256 b=2",
            falcon,
            work(seq_len=256, batch_size=2, attention_impl="fused"),
            slow=True,
        ),
        Case(
            "qwen long decode qkv-bias embed-scale prompt 256",
            qwen,
            work("decode", seq_len=256, new_tokens=4),
            slow=True,
        ),
        Case("gpt long train eager s=256", gpt, work(seq_len=256)),
        Case(
            "gpt long train fused s=256 b=4",
            gpt,
            work(seq_len=256, batch_size=4, attention_impl="fused"),
        ),
        Case("gpt long train eager s=128 b=8", gpt, work(seq_len=128, batch_size=8)),
        Case("gpt long train sliding-window s=256", gpt, work(seq_len=256, **window)),
        Case(
            "gpt long train chunked fused s=256",
            gpt,
            work(seq_len=256, attention_impl="fused", **chunked),
        ),
        Case("gpt long train checkpointing s=256", gpt, work(seq_len=256, checkpointing="full")),
        # torch.autocast on CPU (issue 10): the scores and their backward decide the peak
        Case("gpt long train autocast bf16 s=256", gpt, work(seq_len=256, autocast="bf16")),
        Case("gpt long train pure bf16 s=256", gpt, work(seq_len=256, dtype="bf16")),
        Case(
            "gpt long train fused autocast bf16 s=256 b=4",
            gpt,
            work(seq_len=256, batch_size=4, attention_impl="fused", autocast="bf16"),
        ),
        Case(
            "llama long train gqa eager autocast bf16 s=256 b=2",
            llama,
            work(seq_len=256, batch_size=2, autocast="bf16"),
            slow=True,
        ),
        Case(
            "gpt long train autocast fp16 s=256 b=2",
            gpt,
            work(seq_len=256, batch_size=2, autocast="fp16"),
            slow=True,
        ),
        Case("llama long train gqa fused s=256", llama, work(seq_len=256, attention_impl="fused")),
        Case("gpt long prefill s=512 b=4", gpt, work("prefill", seq_len=512, batch_size=4)),
        Case("gpt long decode prompt 256", gpt, work("decode", seq_len=256, new_tokens=4)),
        Case("gpt long train eager s=512 b=8", gpt, work(seq_len=512, batch_size=8), slow=True),
        Case(
            "gpt long train fused s=512 b=8",
            gpt,
            work(seq_len=512, batch_size=8, attention_impl="fused"),
            slow=True,
        ),
        Case(
            "gpt long train chunked eager s=512 b=2",
            gpt,
            work(seq_len=512, batch_size=2, **chunked),
            slow=True,
        ),
        Case(
            "gpt long train sliding-window fused s=512 b=2",
            gpt,
            work(seq_len=512, batch_size=2, attention_impl="fused", **window),
            slow=True,
        ),
        Case(
            "gpt long train checkpointing fused s=512 b=4",
            gpt,
            work(seq_len=512, batch_size=4, attention_impl="fused", checkpointing="full"),
            slow=True,
        ),
        Case(
            "gpt long train dropout s=256 b=2",  # peaks in the forward, at the attention
            gpt,
            work(seq_len=256, batch_size=2, dropout=0.1),
        ),
        Case(
            "llama long train gqa eager s=512 b=2",
            llama,
            work(seq_len=512, batch_size=2),
            slow=True,
        ),
        Case("t5 long train s=256", t5, work(seq_len=256, target_len=128), slow=True),
        Case("bert long train s=512 b=2", bert, work(seq_len=512, batch_size=2), slow=True),
        Case(
            "llama long prefill fused s=512 b=8",
            llama,
            work("prefill", seq_len=512, batch_size=8, attention_impl="fused"),
            slow=True,
        ),
        Case(
            "gpt long prefill chunked s=512 b=2",
            gpt,
            work("prefill", seq_len=512, batch_size=2, **chunked),
            slow=True,
        ),
        Case(
            "llama long decode prompt 512 chunked",
            llama,
            work("decode", seq_len=512, new_tokens=4, **chunked),
            slow=True,
        ),
        Case(
            "gpt long decode prompt 512 sliding-window",
            gpt,
            work("decode", seq_len=512, new_tokens=4, **window),
            slow=True,
        ),
    ]


def base_cases() -> list[Case]:
    """At least 24 cases; every architecture, norm, position, MHA/GQA/MQA, impl and mode."""
    gpt = _spec("gpt", "decoder", **GPT)
    gpt_big_vocab = _spec("gpt-big-vocab", "decoder", **{**GPT, "vocab_size": 4096})
    llama = _spec("llama", "decoder", **LLAMA)
    llama_big_vocab = _spec("llama-big-vocab", "decoder", **{**LLAMA, "vocab_size": 4096})
    mqa = _spec("gpt-mqa-rmsnorm", "decoder", **{**GPT, "n_kv_heads": 1, "norm": "rmsnorm"})
    gpt_post = _spec("gpt-post-sinusoidal-relu", "decoder", **VASWANI)
    gpt_geglu = _spec(
        "gpt-geglu-untied", "decoder", **GPT, activation="geglu", tie_embeddings=False
    )
    mistral = _spec("mistral", "decoder", **LLAMA, sliding_window=6)
    bert = _spec("bert", "encoder", **BERT)
    t5_enc = _spec("t5-encoder", "encoder", **T5, lm_head=True)
    t5 = _spec("t5", "encoder-decoder", **T5)
    vaswani = _spec("vaswani", "encoder-decoder", **VASWANI)
    bart = _spec("bart", "encoder-decoder", **BART)
    vit = _spec("vit", "encoder", **{**_BASE, **VIT, "n_layers": 2})
    mla = _spec("mla", "decoder", **MLA)  # issue 22l
    mla_q = _spec("mla-no-q-lora", "decoder", **{**MLA, "q_lora_rank": None})
    moe = _spec("moe", "decoder", **LLAMA, **MOE)  # issue 22e: reference_model/moe.py
    return [
        Case("moe train eager", moe, _work()),
        Case("moe prefill fused", moe, _work("prefill", attention_impl="fused")),
        Case(
            "moe decode eager worst routing",
            moe,
            _work("decode", seq_len=8, new_tokens=4, attention_impl="eager", routing="worst"),
        ),
        Case("gpt train eager", gpt, _work()),
        Case("gpt train fused", gpt, _work(attention_impl="fused")),
        Case("gpt train dropout", gpt, _work(dropout=0.1)),
        Case("gpt train checkpointing", gpt, _work(checkpointing="full")),
        # issue 18: selective recomputation (the eager attention core under checkpoint)
        Case("gpt train selective", gpt, _work(checkpointing="selective", dropout=0.1)),
        Case("gpt train sgd-momentum", gpt, _work(optimizer="sgd-momentum")),
        Case("gpt big-vocab train", gpt_big_vocab, _work()),  # V >> d: logits and dW dominate
        Case("llama gqa train eager", llama, _work()),
        Case("llama gqa train fused", llama, _work(attention_impl="fused")),
        Case("llama gqa train selective", llama, _work(checkpointing="selective")),
        Case("mqa rmsnorm train adam", mqa, _work(optimizer="adam")),
        # torch.autocast on CPU on fp32 weights (issue 10): cast copies of weights and inputs
        Case("gpt train autocast bf16", gpt, _work(autocast="bf16")),
        Case("gpt train autocast fp16", gpt, _work(autocast="fp16")),
        Case(
            "llama gqa train fused autocast bf16",
            llama,
            _work(attention_impl="fused", autocast="bf16"),
        ),  # fmt: skip
        Case("gpt big-vocab train autocast bf16", gpt_big_vocab, _work(autocast="bf16")),
        # pure bf16 (weights, grads, optimizer states bf16; CPU LayerNorm stats in bf16)
        Case("gpt train pure bf16", gpt, _work(dtype="bf16")),
        # b * s small, V >> d, untied: the optimizer step's temporaries make the peak
        *(
            Case(f"llama big-vocab train {opt} {impl}", llama_big_vocab, _step(opt, impl))
            for opt, impl in (
                ("adamw", "fused"),
                ("adamw", "foreach"),
                ("adamw", "forloop"),
                ("sgd-momentum", "foreach"),
                ("sgd-momentum", "fused"),
                ("adafactor", "forloop"),
                ("adafactor", "foreach"),
            )
        ),
        Case("post-norm sinusoidal train", gpt_post, _work()),
        Case("geglu untied train", gpt_geglu, _work()),
        Case("mistral sliding-window train", mistral, _work()),
        Case("gpt chunked train", gpt, _work(attention_pattern="chunked", window=4)),
        Case("gpt chunked train (s % c = 2)", gpt, _work(attention_pattern="chunked", window=7)),
        Case("bert train", bert, _work()),
        Case("t5 encoder train", t5_enc, _work()),
        Case("t5 train", t5, _work(target_len=8)),
        Case("vaswani train", vaswani, _work(target_len=12)),
        Case("bart train fused", bart, _work(target_len=8, attention_impl="fused")),
        Case("gpt prefill", gpt, _work("prefill")),
        Case("llama gqa prefill fused", llama, _work("prefill", attention_impl="fused")),
        Case(
            "gpt chunked prefill (s % c = 2)",
            gpt,
            _work("prefill", attention_pattern="chunked", window=7),
        ),
        Case("vit prefill", vit, _work("prefill", seq_len=17)),
        Case("t5 prefill", t5, _work("prefill", target_len=8)),
        Case("gpt decode", gpt, _work("decode", seq_len=8, new_tokens=6)),
        Case("mistral decode window", mistral, _work("decode", seq_len=4, new_tokens=6)),
        Case(
            "mqa decode chunked",
            mqa,
            _work("decode", seq_len=5, new_tokens=6, attention_pattern="chunked", window=4),
        ),
        Case("t5 decode", t5, _work("decode", seq_len=10, new_tokens=5)),
        Case("bart decode", bart, _work("decode", seq_len=10, new_tokens=5)),
        # issue 22l: multi-head latent attention (reference_model/mla.py)
        Case("mla train eager", mla, _work()),
        Case("mla train fused b=1", mla, _work(batch_size=1, attention_impl="fused")),
        Case("mla no-q-lora train checkpointing", mla_q, _work(checkpointing="full")),
        Case("mla prefill fused", mla, _work("prefill", attention_impl="fused")),
        Case("mla decode", mla_q, _work("decode", seq_len=8, new_tokens=6)),
    ]


#: the HF section's two (b, s) points: a small one, and one where activations dominate the
#: training peak (tiny widths: still seconds on a CPU); s is bounded by the configs' 64
#: positions. ViT's s is set by its image: 32 px / 8 px patches -> 17 tokens; 64 px -> 65.
HF_POINTS = ((2, 32), (8, 64))
HF_NEW_TOKENS = 3
#: families the HF section also trains under autocast bf16 (estimator/rules/hf/autocast.py)
HF_AUTOCAST = ("gpt2", "llama")


def hf_cases() -> list[Case]:
    """The HF section: every family of tgauge/hf_tiny.py x eager / fused attention x train,
    prefill and (generating classes only) decode, at the two (b, s) points of HF_POINTS.
    Decode: a decoder's prompt is s - HF_NEW_TOKENS tokens, then HF_NEW_TOKENS steps (s
    positions in all); an encoder-decoder reads s source tokens, a 1-token prompt, then the
    steps. The families of HF_AUTOCAST also train under torch.autocast bf16, eager and fused,
    at both points."""
    from tgauge.hf_tiny import CONFIGS, DECODERS

    out = []
    for family, base in CONFIGS.items():
        for b, s in HF_POINTS:
            config = {**base, "image_size": s} if family == "vit" else base
            if family == "vit":
                s = (s // config["patch_size"]) ** 2 + 1
            spec = ModelSpec.from_hf_config(config).model_copy(update={"name": f"hf-{family}"})
            # build the class the spec describes (estimator/spec/hf_config.py falls back to the
            # family's class for a head it does not model)
            config = {**config, "architectures": [spec.hf_architecture]}
            modes = ("train", "prefill", "decode") if family in DECODERS else ("train", "prefill")
            for mode, attn in ((m, a) for m in modes for a in ("eager", "fused")):
                w = Workload(mode=mode, batch_size=b, seq_len=s, attention_impl=attn,
                             **_hf_decode(spec, mode, s))  # fmt: skip
                out.append(Case(f"hf {family} {mode} {attn} b={b} s={s}", spec, w,
                                hf_config=config))  # fmt: skip
            if family in HF_AUTOCAST:  # training under torch.autocast bf16 (issue 10)
                for attn in ("eager", "fused"):
                    w = Workload(batch_size=b, seq_len=s, attention_impl=attn, autocast="bf16")
                    out.append(Case(f"hf {family} train {attn} autocast bf16 b={b} s={s}", spec,
                                    w, hf_config=config))  # fmt: skip
    return out


def _hf_decode(spec: ModelSpec, mode: str, s: int) -> dict[str, int]:
    """A decode's steps and, for a decoder, its prompt (s positions in all)."""
    if mode != "decode":
        return {}
    if spec.arch == "encoder-decoder":
        return {"new_tokens": HF_NEW_TOKENS}
    return {"new_tokens": HF_NEW_TOKENS, "prompt_len": s - HF_NEW_TOKENS}
