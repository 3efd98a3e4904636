"""Workload options, defined once and added to any command with ``@with_workload``.

A decorated command receives ``workload: Workload`` built from its --mode, --batch-size, ...
options; bad values raise SpecError / ValidationError, which ``@user_errors`` reports.
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from estimator.spec import MAX_NEW_TOKENS, SpecError, Workload

F = TypeVar("F", bound=Callable[..., Any])
_PANEL = "Workload"

# field name -> (type, default, flag(s), help); defaults None mean "the Workload's default"
WORKLOAD_OPTIONS: dict[str, tuple[Any, Any, tuple[str, ...], str]] = {
    "mode": (str, "train", ("--mode",), "train | prefill | decode"),
    "batch_size": (int, 1, ("--batch-size", "-b"), "sequences per step (b)"),
    "seq_len": (
        int,
        512,
        ("--seq-len", "-s"),
        "tokens per sequence (s); encoder input of an encoder-decoder; ViT: patches + 1",
    ),
    "target_len": (int | None, None, ("--target-len",), "decoder tokens (encoder-decoder)"),
    "prompt_len": (
        int | None,
        None,
        ("--prompt-len",),
        "decode: prompt tokens (default: seq-len, or 1 for encoder-decoder)",
    ),
    "new_tokens": (int, 1, ("--new-tokens",), "decode: one-token steps after the prompt"),
    "dtype": (
        str | None,
        None,
        ("--dtype",),
        "weights: fp32 | fp16 | bf16 | int8 | int4 (default: the preset's usual dtype, else fp32)",
    ),
    "compute_dtype": (str | None, None, ("--compute-dtype",), "activations: fp32 | fp16 | bf16"),
    "master_weights": (
        bool | None,
        None,
        ("--master-weights/--no-master-weights",),
        "mixed precision: keep an fp32 master copy of the weights (default: off, on for a "
        "preset trained that way when --dtype is not given)",
    ),
    "autocast": (
        str | None,
        None,
        ("--autocast",),
        "train under torch.autocast: bf16 | fp16 (fp32 weights; matmuls on cast copies)",
    ),
    "optimizer": (
        str,
        "adamw",
        ("--optimizer",),
        "adamw | adam | sgd | sgd-momentum | adafactor | adamw-8bit | none",
    ),
    "optimizer_impl": (
        str | None,
        None,
        ("--optimizer-impl",),
        "fused | foreach | forloop (default: torch's choice: foreach on cuda, forloop on cpu)",
    ),
    "checkpointing": (
        str,
        "none",
        ("--checkpointing",),
        "activation checkpointing: none | full | selective (the eager attention core)",
    ),
    "attention_impl": (
        str | None,
        None,
        ("--attention",),
        "eager (s x s scores kept) | fused (flash-style, no s x s tensor); default: the "
        "preset's usual one, else eager",
    ),
    "dropout": (
        float | None,
        None,
        ("--dropout",),
        "training: dropout probability (default: the model's own, e.g. GPT-2's 0.1; else 0)",
    ),
    "attention_pattern": (
        str | None,
        None,
        ("--pattern",),
        "full | causal | sliding_window | chunked (default: the model's own)",
    ),
    "window": (int | None, None, ("--window",), "sliding-window width or chunk size"),
    "kv_cache": (bool, True, ("--kv-cache/--no-kv-cache",), "decode with a KV cache"),
    "use_cache": (
        bool | None,
        None,
        ("--use-cache/--no-use-cache",),
        "training: the forward builds a KV cache (transformers' use_cache; what sdpa saves "
        "can differ); default: the model's own",
    ),
    "kv_cache_dtype": (
        str | None,
        None,
        ("--kv-cache-dtype",),
        "fp32 | fp16 | bf16 | fp8 | fp8_e4m3 | fp8_e5m2 | int8 | int4 (default: compute dtype)",
    ),
    "rope_scaling": (
        float | None,
        None,
        ("--rope-scaling",),
        "rotary models: RoPE scaling factor; the context limit becomes factor x max_seq_len",
    ),
    "causal_flops": (
        str,
        "full",
        ("--causal-flops",),
        "count causal attention as the full s x s rectangle (as torch does) or the triangle",
    ),
    # issue 19
    "engine": (
        str | None,
        None,
        ("--engine",),
        "forward | hf-generate | vllm: the code serving a prefill / decode "
        "(estimator/replay/engines.py); default: a config.json or Hub id decodes as "
        "hf-generate (transformers' generate()), a preset or spec file as forward",
    ),
    "quant": (
        str | None,
        None,
        ("--quant",),
        "weights as a quantized checkpoint ships them: gptq | awq (int4, groups) | fp8 | "
        "fp8-tensor | int8 | nf4 (bitsandbytes); embeddings, LM head, norms stay in --dtype "
        "(fp16 / bf16). Replaces --dtype int8 / int4, which quantize every parameter",
    ),
    "group_size": (
        int | None,
        None,
        ("--group-size",),
        "--quant gptq / awq: input channels per scale and zero point (default 128)",
    ),
    # issue 20: what a training step trains (estimator/spec/finetune.py)
    "finetune": (
        str,
        "full",
        ("--finetune",),
        "full | freeze (with --frozen) | lora | qlora (LoRA on a 4-bit bitsandbytes base)",
    ),
    "frozen": (
        str | None,
        None,
        ("--frozen",),
        "--finetune freeze: comma-separated patterns of parameter terms, e.g. "
        "'embed,decoder.layers.*'",
    ),
    "lora_rank": (int | None, None, ("--lora-rank",), "LoRA rank r (default: peft's 8)"),
    "lora_alpha": (int | None, None, ("--lora-alpha",), "LoRA alpha (default: peft's 8)"),
    "lora_dropout": (float | None, None, ("--lora-dropout",), "LoRA dropout (default 0.0)"),
    "lora_targets": (
        str | None,
        None,
        ("--lora-targets",),
        "comma-separated: q,k,v,qkv,o,gate,up,down,lm_head or HF module names "
        "(default: peft's for the family, q,v; GPT-2 c_attn)",
    ),
    "quant_type": (str, "nf4", ("--quant-type",), "--finetune qlora: nf4 | fp4"),
    "double_quant": (
        bool,
        False,
        ("--double-quant/--no-double-quant",),
        "--finetune qlora: bitsandbytes' double quantization of the absmax",
    ),
    "kbit_prep": (
        bool,
        False,
        ("--kbit-prep/--no-kbit-prep",),
        "--finetune qlora: after peft's prepare_model_for_kbit_training (fp32 embeddings, "
        "norms, LM head, so fp32 activations; with --checkpointing full its default "
        "gradient checkpointing and input-grad hook)",
    ),
    # issue 22: a mixture of experts' experts code (estimator/rules/hf/moe.py)
    "experts_impl": (
        str,
        "grouped_mm",
        ("--experts-impl",),
        "a mixture of experts' experts code in transformers: grouped_mm (its default) | "
        "eager | batched_mm (memory modelled for grouped_mm only)",
    ),
    # issue 22e: the routing the reference model's MoE peaks assume (rules/reference/moe.py)
    "routing": (
        str,
        "uniform",
        ("--routing",),
        "the tokens per expert a reference mixture of experts' peaks assume: uniform (the "
        "k n routed pairs spread evenly) | worst (every token on the same k experts)",
    ),
}
#: options given as one comma-separated string, Workload tuples (issue 20)
_LISTS = ("frozen", "lora_targets")

Json = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
Impl = Annotated[
    str | None,
    typer.Option(
        "--impl",
        help="reference | hf: our reference model of MODEL, or its Hugging Face class (a "
        "config.json, or a preset with a twin: estimator/spec/hf_twins.py); default: a preset or "
        "spec file -> reference, a config.json -> hf",
    ),
]


class Wrap(str, enum.Enum):
    """FSDP2 units (estimator.spec.parallel.Parallel.wrap; issue 18)."""

    blocks = "blocks"
    torchtitan = "torchtitan"


#: options that only one kind of run reads: given elsewhere they would be silently ignored
_ONLY_IN: dict[str, tuple[str, ...]] = {
    "optimizer": ("train",),
    "checkpointing": ("train",),
    "master_weights": ("train",),
    "autocast": ("train",),
    "dropout": ("train",),
    "kv_cache": ("prefill", "decode"),
    "use_cache": ("train",),
    "kv_cache_dtype": ("prefill", "decode"),
    "prompt_len": ("decode",),
    "new_tokens": ("decode",),
    "engine": ("prefill", "decode"),
    "quant": ("prefill", "decode"),
}


def _check_ignored(fields: dict[str, Any], swept: frozenset[str] = frozenset()) -> None:
    """SpecError for an option given (not its default) that this --mode would ignore; not
    when the command sweeps the mode itself (``--vary mode=train,decode``)."""
    if "mode" in swept:
        return
    mode = fields.get("mode", "train")
    for name, modes in _ONLY_IN.items():
        value = fields.get(name)
        if name in fields and value != WORKLOAD_OPTIONS[name][1] and mode not in modes:
            flag = WORKLOAD_OPTIONS[name][2][0].split("/")[0 if value else -1]
            raise SpecError(
                f"{flag} applies to --mode {' or '.join(modes)} only; --mode {mode} would ignore it"
            )


def build_workload(swept: frozenset[str] = frozenset(), **fields: Any) -> Workload:
    """A Workload from option values; None means 'use the Workload's default'. ``swept``:
    the fields the command varies (--vary / --sweep)."""
    if (fields.get("new_tokens") or 0) > MAX_NEW_TOKENS:
        raise SpecError(
            f"new_tokens={fields['new_tokens']} is invalid: at most {MAX_NEW_TOKENS:,} "
            "(decode is estimated one step at a time)"
        )
    _check_ignored(fields, swept)
    for name in _LISTS:
        if isinstance(fields.get(name), str):
            fields[name] = tuple(x.strip() for x in fields[name].split(",") if x.strip())
    return Workload.model_validate({k: v for k, v in fields.items() if v is not None})


class AppliedDefaults(dict[str, Any]):
    """The workload fields MODEL's usual settings fill (estimator.spec.resolved_defaults, as
    estimate() applies them), with ``source``: where those settings come from."""

    source: str = ""


def _applied_defaults(model: Any, impl: str | None, workload: Workload) -> AppliedDefaults:
    """What the library fills for one MODEL (not a list) from its usual settings: the CLI
    passes only what the user gave, the library decides the rest (one source of defaults)."""
    from estimator.spec.workload import resolved_defaults
    from tgauge.loading import load_spec
    from tgauge.recurrent_view import is_recurrent

    if isinstance(model, list):
        model = model[0] if len(model) == 1 else None
    if not isinstance(model, str) or is_recurrent(model):  # a recurrent preset: its own view
        return AppliedDefaults()
    spec = load_spec(model, impl)
    out = AppliedDefaults(resolved_defaults(spec, workload)[1])
    out.source = spec.usual.source if spec.usual is not None and out else ""
    return out


def with_workload(func: F | None = None, *, preset_defaults: bool = False) -> Any:
    """Add the workload options to a command; it receives them as ``workload``.

    The workload holds only what the user gave; the library fills the rest from the model's
    usual settings (ModelSpec.usual, estimator.spec.resolved_defaults). With
    ``preset_defaults``, a command with a ``defaults_applied`` parameter receives the values
    the library will fill (an AppliedDefaults) to announce them.
    """
    if func is None:
        return functools.partial(with_workload, preset_defaults=preset_defaults)
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # resolve string annotations
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in sig.parameters.values()
        if p.name != "workload"
    ]
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[typ, typer.Option(*flags, help=help_, rich_help_panel=_PANEL)],
        )
        for name, (typ, default, flags, help_) in WORKLOAD_OPTIONS.items()
    ]

    takes_applied = "defaults_applied" in sig.parameters
    kept = [p for p in kept if p.name != "defaults_applied"]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fields = {name: kwargs.pop(name) for name in WORKLOAD_OPTIONS if name in kwargs}
        ranges = [*(kwargs.get("vary") or []), *(kwargs.get("sweep") or [])]
        swept = frozenset(r.partition("=")[0].strip() for r in ranges if isinstance(r, str))
        if fields.get("engine") is None:
            fields["engine"] = default_engine(kwargs.get("model"), fields.get("mode"))
        workload = build_workload(swept, **fields)
        applied = AppliedDefaults()
        if preset_defaults and takes_applied:
            applied = _applied_defaults(kwargs.get("model"), kwargs.get("impl"), workload)
        if takes_applied:
            kwargs["defaults_applied"] = applied
        return func(*args, workload=workload, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=kept + added)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def default_engine(model: Any, mode: str | None) -> str | None:
    """The engine a decode of MODEL runs when --engine is left out (issue 19): its usual one
    (estimator/spec/usual.py UsualSettings.decode_engine: a config.json or Hub id of a
    decoder-only LM is served by transformers' generate(), ``hf-generate``); a preset, and
    every prefill, keep the plain forward (None: the default)."""
    if mode != "decode" or not isinstance(model, str):
        return None
    from tgauge.loading import load_model

    try:
        spec, _ = load_model(model)
    except Exception:  # the command reports a bad MODEL itself
        return None
    return spec.usual.decode_engine if spec.usual is not None else None
