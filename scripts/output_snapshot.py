"""Every public output of the estimator over a seeded random grid, one JSON line each: run it
on two trees and compare the files byte for byte to show a change leaves the answers alone.

  PYTHONPATH=TREE .venv/bin/python scripts/output_snapshot.py OUT.jsonl [SEED] [N]

Covers estimate() (N random workloads over the presets, their Hugging Face twins, the tiny HF
configs and 40 random specs: modes, precisions, optimizers, checkpointing, dropout, patterns,
devices, caches; refusals as their messages), plan() with and without sharding, step times,
serving capacity and sweeps (CSV and JSON) on six presets. It also runs on trees from before
the estimator's restructure (each name is tried at its old module path second).
"""

from __future__ import annotations

import importlib
import json
import random
import sys
from collections.abc import Callable
from typing import Any, TextIO


def _find(*names: str) -> Any:
    """The first of the dotted ``names`` that imports."""
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(names)


def _emit(out: TextIO, key: str, fn: Callable[[], Any]) -> None:
    try:
        value = fn()
    except Exception as exc:  # a refusal is an output too
        value = f"ERROR {type(exc).__name__}: {exc}"
    out.write(json.dumps({"k": key, "v": value}, sort_keys=True) + "\n")


def _random_spec(rng: random.Random, i: int, model_spec: Any) -> Any:
    arch = rng.choice(["encoder", "decoder", "encoder-decoder"])
    h = rng.choice([1, 2, 4])
    f: dict[str, Any] = dict(
        name=f"rand{i}", arch=arch, d_model=h * rng.choice([4, 8]), n_heads=h,
        n_kv_heads=rng.choice([x for x in (1, 2, h) if h % x == 0]),
        d_ff=rng.choice([8, 24, 32]), vocab_size=rng.choice([11, 50]), max_seq_len=256,
        activation=rng.choice(["relu", "gelu", "swiglu", "geglu"]),
        norm=rng.choice(["layernorm", "rmsnorm"]), norm_position=rng.choice(["pre", "post"]),
        bias=rng.random() < 0.5, tie_embeddings=rng.random() < 0.5,
        final_norm=rng.random() < 0.7, embed_norm=rng.random() < 0.2,
        position=rng.choice(["sinusoidal", "learned", "rotary", "relative", "none"]),
    )  # fmt: skip
    if arch != "decoder":
        f["n_encoder_layers"] = rng.choice([1, 2, 3, 5])
    if arch != "encoder":
        f["n_decoder_layers"] = rng.choice([1, 2, 3, 5])
    if arch == "encoder" and rng.random() < 0.4:
        f.update(pooler=True, lm_head=False, n_labels=rng.choice([0, 3]))
    if rng.random() < 0.2 and arch == "decoder":
        f["sliding_window"] = rng.choice([4, 16])
    return model_spec(**f)


def _random_workload(rng: random.Random, spec: Any) -> dict[str, Any]:
    mode = rng.choice(["train", "train", "prefill", "decode"])
    f: dict[str, Any] = {"mode": mode, "batch_size": rng.choice([1, 1, 2, 3, 8])}
    f["seq_len"] = (
        spec.n_positions if spec.is_patch_input else rng.choice([1, 2, 5, 16, 33, 64, 130])
    )
    f["attention_impl"] = rng.choice(["eager", "fused"])
    if mode == "train":
        f["dtype"] = rng.choice(["fp32", "fp32", "bf16", "fp16"])
        if f["dtype"] != "fp32" and rng.random() < 0.5:
            f["master_weights"] = True
        if f["dtype"] == "fp32" and rng.random() < 0.25:
            f["autocast"] = rng.choice(["bf16", "fp16"])
        f["optimizer"] = rng.choice(
            ["adamw", "adam", "sgd", "sgd-momentum", "adafactor", "adamw-8bit", "none"]
        )
        if rng.random() < 0.3:
            f["optimizer_impl"] = rng.choice(["fused", "foreach", "forloop"])
        f["checkpointing"] = rng.choice(["none", "none", "full"])
        f["dropout"] = rng.choice([0.0, 0.0, 0.1])
        if rng.random() < 0.3:
            f["use_cache"] = rng.choice([True, False])
    else:
        f["dtype"] = rng.choice(["fp32", "bf16", "fp16", "int8", "int4"])
        if rng.random() < 0.3:
            f["kv_cache_dtype"] = rng.choice(["fp8", "int4", "bf16"])
        if rng.random() < 0.2:
            f["kv_cache"] = False
    if mode == "decode":
        f["new_tokens"] = rng.choice([1, 2, 7, 40])
        if rng.random() < 0.5:
            f["prompt_len"] = rng.choice([1, 3, 20, 70])
    if spec.arch == "encoder-decoder" and rng.random() < 0.5:
        f["target_len"] = rng.choice([1, 4, 17])
    if rng.random() < 0.25:
        f["attention_pattern"] = rng.choice(["full", "causal", "sliding_window", "chunked"])
        if f["attention_pattern"] in ("sliding_window", "chunked"):
            f["window"] = rng.choice([2, 4, 7, 16])
    f["device"] = rng.choice(["cuda", "cpu"])
    if rng.random() < 0.1:
        f["causal_flops"] = "triangle"
    if spec.position == "rotary" and rng.random() < 0.2:
        f["rope_scaling"] = 2.0
    return f


def main(path: str, seed: int = 17, n: int = 4000) -> None:
    from estimator import PRESETS, ModelSpec, Workload, estimate, get_preset
    from tgauge.hf_tiny import CONFIGS

    plan = _find("estimator.plan.capacity.plan", "estimator.plan.plan")
    sharding = _find("estimator.plan.capacity.Sharding", "estimator.plan.Sharding")
    sweep = _find("estimator.plan.sweep.sweep", "estimator.sweep.sweep")
    step_times = _find("estimator.plan.hardware.step_times", "estimator.hardware.step_times")
    get_gpu = _find("estimator.plan.hardware.get_gpu", "estimator.hardware.get_gpu")
    usable = _find("estimator.plan.hardware.usable_bytes", "estimator.hardware.usable_bytes")
    serving = _find("estimator.plan.serving.serving_capacity", "estimator.serving.serving_capacity")
    twin = _find("estimator.spec.hf_twins.hf_twin_spec", "estimator.hf_twins.hf_twin_spec")

    rng = random.Random(seed)
    specs = dict(PRESETS)
    for name in list(PRESETS):
        try:
            specs["hf:" + name] = twin(name)
        except Exception:  # no twin (transformer-base / -big)
            pass
    for family, cfg in CONFIGS.items():
        specs["tiny:" + family] = ModelSpec.from_hf_config(cfg)
    for i in range(40):
        try:
            specs[f"rand{i}"] = _random_spec(rng, i, ModelSpec)
        except Exception:  # a combination ModelSpec refuses
            pass
    names = list(specs)
    with open(path, "w") as out:
        for i in range(n):
            name = rng.choice(names)
            spec = specs[name]
            f = _random_workload(rng, spec)
            try:
                w = Workload(**f)
            except Exception as exc:  # a combination Workload refuses
                _emit(out, f"wl{i}", lambda exc=exc: f"WLERROR {exc}")
                continue
            key = f"est{i}:{name}:{json.dumps(f, sort_keys=True)}"
            _emit(out, key, lambda s=spec, w=w: json.loads(estimate(s, w).model_dump_json()))
        gpu = get_gpu("h100-sxm")
        for name in ["gpt2-small", "llama-3-8b", "t5-small", "mistral-7b", "bert-base", "vit-b-16"]:
            spec = get_preset(name)
            s = spec.n_positions if spec.is_patch_input else 512
            for mode in ["train", "prefill"] + ([] if spec.arch == "encoder" else ["decode"]):
                w = Workload(mode=mode, seq_len=s, dtype="bf16", attention_impl="fused",
                             new_tokens=64)  # fmt: skip
                for sh in (None, sharding(n_gpus=8, zero=3), sharding(n_gpus=8, tp=2, zero=1)):
                    _emit(out, f"plan:{name}:{mode}:{sh}", lambda spec=spec, w=w, sh=sh: json.loads(
                        plan(spec, w, usable(gpu), "h100-sxm", sh).model_dump_json()))  # fmt: skip
                _emit(out, f"times:{name}:{mode}", lambda spec=spec, w=w: json.loads(
                    step_times(estimate(spec, w), gpu).model_dump_json()))  # fmt: skip
                if mode == "decode" and spec.arch == "decoder":
                    _emit(out, f"serve:{name}", lambda spec=spec, w=w: json.loads(
                        serving(spec, w, gpu).model_dump_json()))  # fmt: skip
                vary = (
                    {"batch_size": [1, 2, 3, 4]}
                    if spec.is_patch_input
                    else {"seq_len": [8, 64, 100, 4096, 10**6], "batch_size": [1, 2, 7]}
                )
                _emit(out, f"sweep:{name}:{mode}", lambda spec=spec, w=w, vary=vary: sweep(
                    spec, w, vary, usable(gpu)).to_csv())  # fmt: skip
                _emit(out, f"sweepj:{name}:{mode}", lambda spec=spec, w=w, vary=vary: sweep(
                    spec, w, vary).to_json())  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], *(int(a) for a in args[1:]))
