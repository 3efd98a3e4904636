"""Human units for the presentation layer: bytes in KiB/MiB/GiB (powers of 2), FLOPs in
GFLOP/TFLOP (powers of 10). The library stays in exact ints; only this module rounds."""

from __future__ import annotations

from typing import Any

_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_DECIMAL = (
    ("EFLOP", 10**18),
    ("PFLOP", 10**15),
    ("TFLOP", 10**12),
    ("GFLOP", 10**9),
    ("MFLOP", 10**6),
)

#: stated once under every FLOP table
FLOP_UNITS_NOTE = "FLOP units are decimal: 1 GFLOP = 10^9, 1 TFLOP = 10^12 FLOPs"
BYTE_UNITS_NOTE = "byte units are binary: 1 KiB = 2^10, 1 MiB = 2^20, 1 GiB = 2^30 bytes"


_COUNT = (("B", 10**9), ("M", 10**6), ("K", 10**3))


def _scaled(n: int | float, units: tuple[tuple[str, int], ...], unscaled: str) -> str:
    """n in the largest of ``units`` it reaches, 2 decimals; below all: the plain integer."""
    for unit, size in units:
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)}{unscaled}"


def human_bytes(n_bytes: int | float | None) -> str:
    """'1.50 GiB', '512 B' (binary prefixes, never 'GB'); None -> '-'."""
    return "-" if n_bytes is None else _scaled(n_bytes, _BINARY, " B")


def human_flops(n_flops: int | float | None) -> str:
    """'6.12 TFLOP' (decimal prefixes); None -> '-'."""
    return "-" if n_flops is None else _scaled(n_flops, _DECIMAL, " FLOP")


def human_count(n: int) -> str:
    """'124.44 M' parameters (decimal)."""
    return _scaled(n, _COUNT, "")


def share(part: int, total: int) -> str:
    """'12.3%' of total ('-' when the total is 0)."""
    return f"{100 * part / total:.1f}%" if total else "-"


def human_seconds(s: float) -> str:
    """0.0123 -> '12.3 ms'; 90000 -> '1.04 d'."""
    for scale, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms")):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e6:.3g} us"


def precision_label(w: Any) -> str:
    """How a step holds and computes its numbers; the three ways to train in low precision
    read apart: 'fp32 weights, autocast bf16' (torch.autocast), 'bf16 weights + fp32
    master, compute bf16' (mixed precision with a master copy), 'pure bf16 weights, grads
    and optimizer states, compute bf16'."""
    finetune = getattr(w, "finetune", "full")  # issue 20
    if finetune in ("lora", "qlora"):
        base = f"4-bit {w.quant_type} ({w.dtype} rest)" if finetune == "qlora" else w.dtype
        if getattr(w, "kbit_prep", False):  # prepare_model_for_kbit_training's fp32 upcast
            base = f"4-bit {w.quant_type} (fp32 rest: kbit-prep, compute {w.dtype})"
        head = f"{finetune} r={w.lora_rank} alpha={w.lora_alpha}"
        tail = f"frozen {base} base, compute {w.compute_dtype}"
        return f"{head} (fp32 adapters, grads, states), {tail}"
    if finetune == "freeze":
        frozen = ",".join(w.frozen or ())
        return f"{w.dtype} weights, {frozen} frozen, compute {w.compute_dtype}"
    if w.autocast:
        return f"fp32 weights, autocast {w.autocast}"
    if w.master_weights:
        return f"{w.dtype} weights + fp32 master, compute {w.compute_dtype}"
    if w.mode == "train" and w.dtype in ("fp16", "bf16"):
        return f"pure {w.dtype} weights, grads and optimizer states, compute {w.compute_dtype}"
    return f"{w.dtype} weights, compute {w.compute_dtype}"


def describe_workload(spec: Any, workload: Any, omit: Any = ()) -> str:
    """'train, b=1, s=512, bf16 weights + fp32 master, compute bf16, attention fused,
    checkpointing none': every setting that changes the numbers, defaults included (the
    model's usual settings too, as estimate() fills them: resolved_defaults). ``omit``: the
    Workload fields a sweep varies, left out (their values are in its rows)."""
    from estimator.shapes import resolve
    from estimator.spec.workload import resolved_defaults

    w = resolved_defaults(spec, workload)[0]
    if w.mode == "decode":
        lengths = f"prompt {resolve(spec, w).prompt:,} + {w.new_tokens:,} new tokens"
        if "prompt_len" in omit or "new_tokens" in omit:
            lengths = ""
        if spec.arch == "encoder-decoder" and "seq_len" not in omit:
            lengths = ", ".join(x for x in (f"s={w.seq_len:,}", lengths) if x)
    else:
        lengths = "" if "seq_len" in omit else f"s={w.seq_len:,}"
        if w.target_len and "target_len" not in omit:
            lengths += f", target {w.target_len:,}"
    precision = precision_label(w)
    if w.mode != "train" and w.kv_cache:
        precision += f", KV cache {w.kv_cache_dtype}"
    batch = "" if "batch_size" in omit else f"b={w.batch_size}"
    parts = [p for p in ("" if "mode" in omit else w.mode, batch, lengths) if p]
    parts += [precision, f"attention {w.attention_impl}"]
    if w.mode != "train":  # issue 19: the serving engine
        parts.append(f"engine {w.engine}")
    if w.mode == "train":
        parts.append(f"checkpointing {w.checkpointing}")
        if w.dropout:
            parts.append(f"dropout {w.dropout:g}")
    if w.rope_scaling:
        parts.append(f"rope scaling x{w.rope_scaling:g}")
    parts.append(f"implementation {implementation_label(spec)}")
    return ", ".join(parts).replace(", , ", ", ").strip(", ")


def implementation_label(spec: Any) -> str:
    """'reference' (our reference model) or 'hf LlamaForCausalLM' (the transformers class)."""
    if spec.implementation == "hf":
        return f"hf {spec.hf_architecture}" if spec.hf_architecture else "hf"
    return spec.implementation


def defaults_note(model: str, applied: dict[str, Any]) -> str | None:
    """One line naming the usual settings of MODEL the library filled in (and where they come
    from: ``applied.source`` of tgauge.options.AppliedDefaults), or None when there were none."""
    if not applied:
        return None
    flags = {
        "dtype": "--dtype",
        "attention_impl": "--attention",
        "master_weights": "--master-weights",
        "dropout": "--dropout",
    }
    shown = ", ".join(f"{k}={v}" for k, v in applied.items())
    given = "/".join(flags[k] for k in applied if k in flags)
    source = getattr(applied, "source", "")
    where = f"; {source}" if source else ""
    return f"{model}'s usual settings applied: {shown} (set {given} to change{where})"


def validate_defaults_note(model: str, workload: dict[str, Any]) -> str:
    """For validate's titles: '' or a note that validate measured fp32 / eager where estimate
    and fit would use the preset's usual settings (estimator.spec.presets.PRESET_DEFAULTS)."""
    from estimator.spec.presets import preset_workload_defaults

    usual = preset_workload_defaults(model, str(workload.get("mode", "train")), set())
    differ = {k: v for k, v in usual.items() if workload.get(k) != v}
    if not differ:
        return ""
    shown = ", ".join(f"{k}={v}" for k, v in differ.items())
    return f" (validate's defaults; estimate and fit would use {shown})"


def term_label(name: str, names: Any) -> str:
    """``name``, marked when other terms sit below it (``...ffn`` beside ``...ffn.act``): such
    a term holds what the module's own code saves (the inputs of act(gate) * up), not a
    subtotal of the terms below it."""
    below = any(other.startswith(name + ".") for other in names)
    return f"{name} (own ops, not a subtotal)" if below else name
