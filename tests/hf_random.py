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


#: each family's config keys (tgauge/hf_tiny.py CONFIGS) -> the drawn value each takes, in the
#: order a point sets them (``_draws``: d, h, layers, d_ff, vocab, act and a family's own)
_LLAMA_KEYS = {"hidden_size": "d", "num_attention_heads": "h", "num_key_value_heads": "h_kv",
               "head_dim": "head_dim", "num_hidden_layers": "layers",
               "intermediate_size": "d_ff", "vocab_size": "vocab", "hidden_act": "act"}  # fmt: skip
KEYS: dict[str, dict[str, str]] = {
    "gpt2": {"n_embd": "d", "n_head": "h", "n_layer": "layers", "vocab_size": "vocab",
             "activation_function": "act", "n_inner": "n_inner"},
    "llama": _LLAMA_KEYS,
    "mistral": {**_LLAMA_KEYS, "sliding_window": "window"},
    "bert": {"hidden_size": "d", "num_attention_heads": "h", "num_hidden_layers": "layers",
             "intermediate_size": "d_ff", "vocab_size": "vocab", "hidden_act": "act",
             "architectures": "task"},
    "t5": {"d_model": "d", "num_heads": "h", "d_kv": "d_kv", "d_ff": "d_ff",
           "num_layers": "layers", "vocab_size": "vocab", "feed_forward_proj": "act"},
    "bart": {"d_model": "d", "encoder_attention_heads": "h", "decoder_attention_heads": "h",
             "encoder_ffn_dim": "d_ff", "decoder_ffn_dim": "d_ff", "encoder_layers": "layers",
             "decoder_layers": "layers", "vocab_size": "vocab", "activation_function": "act"},
    "vit": {"hidden_size": "d", "num_attention_heads": "h", "num_hidden_layers": "layers",
            "intermediate_size": "d_ff", "hidden_act": "act", "image_size": "image",
            "patch_size": "patch", "num_labels": "labels"},
}  # fmt: skip


@dataclass(frozen=True)
class RandomPoint:
    name: str
    family: str
    config: dict[str, Any]
    workload: dict[str, Any]


def _draws(rng: random.Random, family: str) -> dict[str, Any]:
    """The values of one config variant, drawn in a fixed order: the widths every family
    has, then the family's own (KEYS names where each goes)."""
    h = rng.choice([1, 2, 4])
    d_h = rng.choice([8, 16])
    v: dict[str, Any] = {"h": h, "d": h * d_h}
    v["act"] = rng.choice(ACTIVATIONS[family])
    v["vocab"] = rng.choice([37, 100, 256, 500])
    v["layers"] = rng.choice([1, 2])
    v["d_ff"] = rng.choice([2, 3, 4]) * v["d"]
    if family == "gpt2":
        v["n_inner"] = rng.choice([None, v["d_ff"]])
    elif family in ("llama", "mistral"):
        v["h_kv"] = rng.choice([k for k in (1, 2, 4) if h % k == 0])
        v["head_dim"] = rng.choice([d_h, d_h, 2 * d_h])  # head_dim apart from d / h
        if family == "mistral":
            v["window"] = rng.choice([4, 8, 64])
    elif family == "bert":
        v["task"] = [rng.choice(["BertForMaskedLM", "BertModel", "BertForSequenceClassification"])]
    elif family == "t5":
        v["d_kv"] = rng.choice([d_h, 8, 32])
    elif family == "vit":
        v["patch"] = rng.choice([4, 8])
        v["image"] = v["patch"] * rng.choice([2, 3, 4])
        v["labels"] = rng.choice([2, 10])
    return v


def _config(rng: random.Random, family: str) -> dict[str, Any]:
    v = _draws(rng, family)
    return {**copy.deepcopy(CONFIGS[family]), **{k: v[name] for k, name in KEYS[family].items()}}


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
