"""A seeded random set of Hugging Face points off the tiny matrix's grid (issue 21): config
variants of the seven families (widths, heads, KV heads, head_dim apart from d / h, d_kv,
activations including written-out and unmodelled ones, vocabularies, windows, task classes)
and workloads (b = 1.., s, train / prefill / decode, eager / fused, fp32, autocast bf16 /
fp16, pure bf16 / fp16). tests/tgauge/test_hf_random.py measures every point on the real
class: within the HF bars, or refused by name.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

from tgauge.hf_tiny import CONFIGS

SEED = 21
N_POINTS = 210
#: precision mode -> Workload fields
PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "autocast-bf16": {"autocast": "bf16"},
    "autocast-fp16": {"autocast": "fp16"},
    "pure-bf16": {"dtype": "bf16"},
    "pure-fp16": {"dtype": "fp16"},
}
#: activations drawn per family (some refused by name: mish, relu6, tanh, ...)
ACTIVATIONS = {
    "gpt2": ["gelu_new", "gelu", "gelu_fast", "gelu_python", "gelu_accurate",
             "gelu_pytorch_tanh", "relu", "quick_gelu", "mish"],
    "bert": ["gelu", "gelu_new", "relu", "gelu_fast", "tanh"],
    "bart": ["gelu", "relu", "gelu_new", "gelu_python", "relu6"],
    "vit": ["gelu", "gelu_new", "gelu_fast", "relu", "quick_gelu"],
    "llama": ["silu", "silu", "gelu", "gelu_new", "gelu_pytorch_tanh"],
    "mistral": ["silu", "silu", "gelu_new", "relu"],
    "t5": ["relu", "gated-gelu", "gated-silu", "gelu", "gated-relu6"],
}  # fmt: skip
DECODERS = ("gpt2", "llama", "mistral", "t5", "bart")


@dataclass(frozen=True)
class RandomPoint:
    name: str
    family: str
    config: dict[str, Any]
    workload: dict[str, Any]


def _config(rng: random.Random, family: str) -> dict[str, Any]:
    cfg = copy.deepcopy(CONFIGS[family])
    h = rng.choice([1, 2, 4])
    d_h = rng.choice([8, 16])
    d = h * d_h
    act = rng.choice(ACTIVATIONS[family])
    vocab = rng.choice([37, 100, 256, 500])
    layers = rng.choice([1, 2])
    d_ff = rng.choice([2, 3, 4]) * d
    if family == "gpt2":
        cfg.update(
            n_embd=d,
            n_head=h,
            n_layer=layers,
            vocab_size=vocab,
            activation_function=act,
            n_inner=rng.choice([None, d_ff]),
        )
    elif family in ("llama", "mistral"):
        h_kv = rng.choice([k for k in (1, 2, 4) if h % k == 0])
        head_dim = rng.choice([d_h, d_h, 2 * d_h])  # head_dim apart from d / h
        cfg.update(
            hidden_size=d,
            num_attention_heads=h,
            num_key_value_heads=h_kv,
            head_dim=head_dim,
            num_hidden_layers=layers,
            intermediate_size=d_ff,
            vocab_size=vocab,
            hidden_act=act,
        )
        if family == "mistral":
            cfg["sliding_window"] = rng.choice([4, 8, 64])
    elif family == "bert":
        cfg.update(
            hidden_size=d,
            num_attention_heads=h,
            num_hidden_layers=layers,
            intermediate_size=d_ff,
            vocab_size=vocab,
            hidden_act=act,
            architectures=[
                rng.choice(["BertForMaskedLM", "BertModel", "BertForSequenceClassification"])
            ],
        )
    elif family == "t5":
        cfg.update(
            d_model=d,
            num_heads=h,
            d_kv=rng.choice([d_h, 8, 32]),
            d_ff=d_ff,
            num_layers=layers,
            vocab_size=vocab,
            feed_forward_proj=act,
        )
    elif family == "bart":
        cfg.update(
            d_model=d,
            encoder_attention_heads=h,
            decoder_attention_heads=h,
            encoder_ffn_dim=d_ff,
            decoder_ffn_dim=d_ff,
            encoder_layers=layers,
            decoder_layers=layers,
            vocab_size=vocab,
            activation_function=act,
        )
    elif family == "vit":
        patch = rng.choice([4, 8])
        cfg.update(
            hidden_size=d,
            num_attention_heads=h,
            num_hidden_layers=layers,
            intermediate_size=d_ff,
            hidden_act=act,
            image_size=patch * rng.choice([2, 3, 4]),
            patch_size=patch,
            num_labels=rng.choice([2, 10]),
        )
    return cfg  # fmt: skip


def _workload(rng: random.Random, family: str, cfg: dict[str, Any]) -> dict[str, Any]:
    modes = ["train", "train", "prefill"] + (["decode"] if family in DECODERS else [])
    mode = rng.choice(modes)
    precision = rng.choice(list(PRECISIONS)) if mode == "train" else rng.choice(
        ["fp32", "fp32", "pure-bf16"])  # fmt: skip
    if family == "vit":
        s = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
    else:
        s = rng.choice([4, 7, 12, 16, 24, 32])
    w: dict[str, Any] = dict(mode=mode, batch_size=rng.choice([1, 1, 2, 3, 4]), seq_len=s,
                             attention_impl=rng.choice(["eager", "fused"]),
                             **PRECISIONS[precision])  # fmt: skip
    if mode == "decode":
        w["new_tokens"] = rng.choice([1, 2, 3])
        if family not in ("t5", "bart"):
            w["prompt_len"] = rng.choice([None, 3, s])
    return {"precision": precision, **w}


def random_points(seed: int = SEED, n: int = N_POINTS) -> list[RandomPoint]:
    """``n`` points drawn from ``seed``: the families in turn, each point's config and
    workload drawn independently."""
    rng = random.Random(seed)
    families = list(CONFIGS)
    points = []
    for i in range(n):
        family = families[i % len(families)]
        cfg = _config(rng, family)
        w = _workload(rng, family, cfg)
        name = f"{i:03d}-{family}-{w['mode']}-{w['attention_impl']}-{w['precision']}"
        points.append(RandomPoint(name, family, cfg, w))
    return points
