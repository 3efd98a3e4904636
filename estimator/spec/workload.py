"""Workload: what is run on a ModelSpec (training step, prefill, incremental decoding), in which
precision, and the defaults a workload leaves to the model, resolved by the functions below.

Workload is a frozen pydantic model that rejects unknown fields; derived defaults
(compute_dtype, kv_cache_dtype) are filled only when absent. The ``resolved_*`` functions say
what an unset field means for a given spec (pattern and window per stack, prompt and decoder
lengths, optimizer implementation); estimator/shapes.py calls them once per estimate and the
reference model (reference_model/) builds itself from the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from estimator.spec.dtypes import DType, FloatDType, KVCacheDType
from estimator.spec.errors import SpecError, UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.sym import vmax

Mode = Literal["train", "prefill", "decode"]
Optimizer = Literal["adamw", "adam", "sgd", "sgd-momentum", "adafactor", "adamw-8bit", "none"]
OptimizerImpl = Literal["fused", "foreach", "forloop"]
Checkpointing = Literal["none", "full", "selective"]
AttentionImpl = Literal["eager", "fused"]
AttentionPattern = Literal["full", "causal", "sliding_window", "chunked"]
CausalFlops = Literal["full", "triangle"]
Autocast = Literal["bf16", "fp16"]
ServingEngine = Literal["forward", "hf-generate", "vllm"]  # issue 19
QuantName = Literal["gptq", "awq", "fp8", "fp8-tensor", "int8", "nf4"]  # issue 19
Finetune = Literal["full", "freeze", "lora", "qlora"]  # issue 20
QuantType = Literal["nf4", "fp4"]  # issue 20
ExpertsImpl = Literal["grouped_mm", "eager", "batched_mm"]  # issue 22
Routing = Literal["uniform", "worst"]  # issue 22e

_TORCH_IMPLS = ("fused", "foreach", "forloop")
#: the implementations each optimizer's step runs as (Workload.optimizer_impl)
IMPLS: dict[str, tuple[str, ...]] = {
    "adamw": _TORCH_IMPLS,
    "adam": _TORCH_IMPLS,
    "sgd": _TORCH_IMPLS,
    "sgd-momentum": _TORCH_IMPLS,
    "adafactor": ("foreach", "forloop"),  # torch.optim.Adafactor has no fused kernel
    "adamw-8bit": ("fused",),  # bitsandbytes' own blockwise kernel
    "none": (),
}


#: the longest decode asked for: the per-step FLOPs and roofline times list every step
MAX_NEW_TOKENS = 2**17
#: the Workload fields that are sizes, each constrained by its own range alone: the variables
#: of a compiled program (estimator/compiled/), the rest of a workload being its structure
SIZE_FIELDS = ("batch_size", "seq_len", "target_len", "prompt_len", "new_tokens")


class Workload(BaseModel):
    """What is run: training step, prefill, or incremental decoding, and in which precision.

    Decode convention: the prompt (prompt_len tokens) is prefilled, then ``new_tokens``
    decode steps each feed one token; after step t the self-attention cache holds
    prompt_len + t positions (capped by a sliding window).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "train"
    batch_size: int = Field(1, gt=0)
    seq_len: int = Field(512, gt=0, description="input length (encoder input for enc-dec)")
    target_len: int | None = Field(
        None, gt=0, description="decoder length, enc-dec; default seq_len"
    )
    prompt_len: int | None = Field(
        None, gt=0, description="decode: prompt; default seq_len (decoder-only) or 1 (enc-dec)"
    )
    new_tokens: int = Field(
        1,
        gt=0,
        le=MAX_NEW_TOKENS,
        description="decode: number of one-token steps",
    )
    dtype: DType = Field("fp32", description="dtype the weights are stored in")
    compute_dtype: FloatDType | None = Field(
        None, description="activations; default dtype, or bf16 for int8/int4 weights"
    )
    master_weights: bool = Field(False, description="mixed precision: fp32 master copy")
    autocast: Autocast | None = Field(
        None,
        description="train under torch.autocast(device, dtype): fp32 weights, grads and "
        "optimizer states; matmuls run in this dtype on cast copies (estimator/rules/autocast.py)",
    )
    optimizer: Optimizer = "adamw"
    optimizer_impl: OptimizerImpl | None = Field(
        None,
        description="how the step runs: fused kernel, foreach (whole tensor lists) or a "
        "for-loop over parameters; default: what torch picks on `device` "
        "(resolved_optimizer_impl)",
    )
    checkpointing: Checkpointing = "none"
    attention_impl: AttentionImpl = "eager"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    attention_pattern: AttentionPattern | None = Field(
        None,
        description="default: causal for "
        "decoders, full for encoders, "
        "sliding_window if the model has one",
    )
    window: int | None = Field(None, gt=0, description="sliding_window width / chunk size")
    kv_cache: bool = True
    use_cache: bool | None = Field(
        None,
        description="training: whether the forward builds a KV cache as it runs (transformers' "
        "use_cache; what attention saves can differ). None: the model's own default "
        "(transformers' decoder LMs: True, config.use_cache)",
    )
    kv_cache_dtype: KVCacheDType | None = Field(
        None, description="default: compute_dtype; fp8 (e4m3 / e5m2) as serving stacks offer"
    )
    rope_scaling: float | None = Field(
        None,
        ge=1.0,
        description="rotary models: the factor a RoPE scaling (linear, dynamic NTK, YaRN) "
        "stretches max_seq_len by; without it a rotary model's context ends at max_seq_len",
    )
    causal_flops: CausalFlops = Field(
        "full",
        description="causal attention FLOPs: the full "
        "s x s rectangle (as FlopCounterMode) or the triangle",
    )
    device: Literal["cuda", "cpu"] = Field(
        "cuda",
        description="the kernels the prediction "
        "assumes: what autograd saves differs by device, "
        "e.g. dropout masks are bool on CUDA, compute dtype "
        "on CPU; the CPU flash-attention kernel saves q, k, "
        "v, its output and the fp32 logsumexp, no RNG state",
    )
    # issue 19
    engine: ServingEngine = Field(
        "forward",
        description="inference: the code that serves the model (estimator/replay/engines.py): "
        "forward (a plain model call, logits of every position), hf-generate (transformers' "
        "generate(): logits of the last prompt position, the logits processors per step; "
        "decode = generate(max_new_tokens=new_tokens + 1)), vllm (paged KV blocks, logits "
        "of the sampled positions only)",
    )
    quant: QuantName | None = Field(
        None,
        description="weights as a quantized checkpoint ships them (estimator/terms/quant.py): "
        "the block linears in gptq / awq (int4, groups) or fp8 (per channel; fp8-tensor), "
        "embeddings, LM head and norms in the 16-bit dtype; int8 / nf4: bitsandbytes",
    )
    group_size: int | None = Field(
        None, gt=0, description="quant gptq / awq: input channels per scale (default 128)"
    )
    block_size: int | None = Field(
        None, gt=0, description="engine vllm: tokens per paged KV block (default 16)"
    )
    max_num_batched_tokens: int | None = Field(
        None,
        gt=0,
        description="engine vllm: tokens one scheduler step runs (chunked prefill; default 2048)",
    )

    @model_validator(mode="after")
    def _check_and_fill(self) -> Workload:
        def fail(field: str, value: object, allowed: str) -> None:
            raise SpecError(f"{field}={value!r} is invalid: {allowed}")

        if self.compute_dtype is None:
            weights_are_int = self.dtype in ("int8", "int4")
            object.__setattr__(self, "compute_dtype", "bf16" if weights_are_int else self.dtype)
        if self.kv_cache_dtype is None:
            object.__setattr__(self, "kv_cache_dtype", self.compute_dtype)
        if self.mode == "train" and self.dtype in ("int8", "int4"):
            fail("dtype", self.dtype, "training needs fp32, fp16 or bf16 weights")
        if self.master_weights and self.dtype not in ("fp16", "bf16"):
            fail(
                "master_weights",
                True,
                f"an fp32 master copy needs dtype fp16 or bf16, not {self.dtype!r}",
            )
        if self.autocast is not None:
            self._check_autocast(fail)
        if self.optimizer_impl is not None:
            allowed = IMPLS[self.optimizer]
            if self.optimizer_impl not in allowed:
                fail(
                    "optimizer_impl",
                    self.optimizer_impl,
                    f"optimizer={self.optimizer!r} runs as {' | '.join(allowed) or 'no step'}",
                )
        if self.quant is not None and self.dtype not in ("fp16", "bf16"):  # issue 19
            fail(
                "dtype",
                self.dtype,
                f"quant={self.quant!r} keeps embeddings, LM head and norms in fp16 or bf16: "
                "give --dtype fp16 or bf16",
            )
        for name in ("block_size", "max_num_batched_tokens"):
            if getattr(self, name) is not None and self.engine != "vllm":
                fail(name, getattr(self, name), "it applies only with engine='vllm'")
        if self.group_size is not None and self.quant not in ("gptq", "awq"):
            fail("group_size", self.group_size, "it applies only with quant='gptq' or 'awq'")
        if self.attention_pattern in ("sliding_window", "chunked") and self.window is None:
            fail("window", None, f"attention_pattern={self.attention_pattern!r} needs a window")
        if self.window is not None and self.attention_pattern not in ("sliding_window", "chunked"):
            fail(
                "window",
                self.window,
                "it applies only with attention_pattern='sliding_window' or 'chunked' "
                f"(attention_pattern={self.attention_pattern!r} would ignore it)",
            )
        return self

    def _check_autocast(self, fail: Any) -> None:
        """torch.autocast casts fp32 weights per op: it needs fp32 weights (dtype), fp32
        activations outside the cast ops (compute_dtype) and no master copy (the weights are
        the master). Only a training step is modelled (check_compatible)."""
        if self.dtype != "fp32":
            fail(
                "dtype",
                self.dtype,
                f"autocast={self.autocast!r} needs fp32 weights (torch.autocast casts them per "
                "op); for pure low-precision training give dtype without autocast",
            )
        if self.compute_dtype != "fp32":
            fail(
                "compute_dtype",
                self.compute_dtype,
                f"autocast={self.autocast!r} picks the dtype per op: leave compute_dtype fp32",
            )

    @property
    def is_training(self) -> bool:
        return self.mode == "train"

    def replace(self, **update: Any) -> Workload:
        """A validated copy with ``update`` applied (``model_copy`` skips validation)."""
        return Workload.model_validate(self.model_dump(exclude_unset=True) | update)

    # issue 20: what is trained (estimator/spec/finetune.py resolves it per spec)
    finetune: Finetune = Field(
        "full",
        description="what a training step trains: full | freeze (all but the modules matching "
        "`frozen`) | lora (adapters on a frozen base, peft) | qlora (LoRA on a 4-bit "
        "bitsandbytes base)",
    )
    frozen: tuple[str, ...] | None = Field(
        None, description="finetune='freeze': fnmatch patterns over parameter term names"
    )
    lora_rank: int | None = Field(None, gt=0, description="LoRA r; default peft's 8")
    lora_alpha: int | None = Field(None, gt=0, description="LoRA alpha; default peft's 8")
    lora_dropout: float | None = Field(None, ge=0.0, lt=1.0, description="default peft's 0.0")
    lora_targets: tuple[str, ...] | None = Field(
        None,
        description="q, k, v, qkv, o, gate, up, down, lm_head or HF module names; default "
        "peft's for the family (q and v; GPT-2: c_attn)",
    )
    quant_type: QuantType = Field("nf4", description="qlora: bnb_4bit_quant_type")
    double_quant: bool = Field(False, description="qlora: bnb_4bit_use_double_quant")
    # issue 22: the MoE experts' code (transformers integrations/moe.py ExpertsInterface)
    experts_impl: ExpertsImpl = Field(
        "grouped_mm",
        description="how a mixture of experts runs its experts: grouped_mm (transformers' "
        "default: one grouped matmul over the routed pairs, sized by k tokens whatever the "
        "routing), eager (a loop over the hit experts) or batched_mm (every pair's weights "
        "gathered); only grouped_mm's memory is modelled",
    )
    # issue 22e: the routing a mixture of experts' peaks assume (estimator/rules/reference/moe.py)
    routing: Routing = Field(
        "uniform",
        description="the tokens each expert gets: uniform (the k n routed pairs spread "
        "evenly) or worst (every token on the same k experts); what is saved is the same for "
        "any routing, the peaks are not",
    )

    @model_validator(mode="after")
    def _check_finetune(self) -> Workload:
        lora = self.finetune in ("lora", "qlora")
        if self.finetune != "full" and self.mode != "train":
            raise SpecError(f"finetune={self.finetune!r} is invalid for mode={self.mode!r}: "
                            "it says what a training step trains (mode='train')")  # fmt: skip
        given = [f for f in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
                 if getattr(self, f) is not None]  # fmt: skip
        if given and not lora:
            raise SpecError(f"{given[0]} is invalid with finetune={self.finetune!r}: "
                            "it applies to finetune='lora' or 'qlora'")  # fmt: skip
        if (self.frozen is not None) != (self.finetune == "freeze"):
            raise SpecError(f"frozen={self.frozen!r} is invalid with finetune="
                            f"{self.finetune!r}: finetune='freeze' needs frozen patterns "
                            "and only it takes them")  # fmt: skip
        if lora:  # peft LoraConfig's defaults (estimator/spec/finetune.py)
            for f, default in (("lora_rank", 8), ("lora_alpha", 8), ("lora_dropout", 0.0)):
                if getattr(self, f) is None:
                    object.__setattr__(self, f, default)
            if self.master_weights:
                raise SpecError(f"master_weights=True is invalid with finetune={self.finetune!r}"
                                ": peft keeps the adapters in fp32 already")  # fmt: skip
        if self.finetune == "qlora" and self.dtype not in ("fp16", "bf16", "fp32"):
            raise SpecError(f"dtype={self.dtype!r} is invalid with finetune='qlora': dtype is "
                            "what stays unquantized (embeddings, norms, LM head)")  # fmt: skip
        return self

    # issue 20: peft's prepare_model_for_kbit_training (estimator/spec/finetune.py)
    kbit_prep: bool = Field(
        False,
        description="finetune='qlora': the model went through peft's "
        "prepare_model_for_kbit_training (every fp16 / bf16 parameter but the 4-bit ones "
        "upcast to fp32, so the activations run in fp32 and the 4-bit linears in `dtype`; "
        "with checkpointing='full' its default use_gradient_checkpointing=True and the "
        "input-grad hook, else use_gradient_checkpointing=False)",
    )

    @model_validator(mode="after")
    def _check_kbit_prep(self) -> Workload:
        if not self.kbit_prep:
            return self
        if self.finetune != "qlora":
            raise SpecError(f"kbit_prep=True is invalid with finetune={self.finetune!r}: "
                            "prepare_model_for_kbit_training prepares a k-bit base "
                            "(finetune='qlora')")  # fmt: skip
        if self.autocast is not None:
            raise SpecError("kbit_prep=True with autocast is not modelled: the upcast model "
                            "runs its activations in fp32 without it")  # fmt: skip
        if self.checkpointing not in ("none", "full"):
            raise SpecError(f"kbit_prep=True with checkpointing={self.checkpointing!r} is "
                            "invalid: use_gradient_checkpointing is on ('full', peft's "
                            "default) or off ('none')")  # fmt: skip
        # the upcast norms, embeddings and LM head make every activation fp32 (a 16-bit
        # tensor times an fp32 weight promotes): the compute dtype, unless the user set one
        if "compute_dtype" not in self.model_fields_set:
            object.__setattr__(self, "compute_dtype", "fp32")
            if "kv_cache_dtype" not in self.model_fields_set:
                object.__setattr__(self, "kv_cache_dtype", "fp32")
        elif self.compute_dtype != "fp32":
            raise SpecError(f"compute_dtype={self.compute_dtype!r} is invalid with "
                            "kbit_prep=True: its fp32 norms, embeddings and LM head make "
                            "the activations fp32")  # fmt: skip
        return self


def revalidated(spec: ModelSpec, workload: Workload) -> tuple[ModelSpec, Workload]:
    """``spec`` and ``workload`` validated again: a ``model_copy(update=...)`` bypasses the
    field constraints (``seq_len=-5`` would give negative FLOPs); SpecError / ValidationError
    for such a copy. Cheap next to an estimate."""
    return (
        ModelSpec.model_validate(spec.model_dump()),
        Workload.model_validate(workload.model_dump()),
    )


def check_compatible(
    spec: ModelSpec, workload: Workload, unsupported: Callable[[], str | None] | None = None
) -> None:
    """Raise SpecError for a workload the model cannot run (e.g. decode on an encoder, a
    context past the model's positions). ``unsupported``: what the estimator's rules do not
    model for this run (a one-line reason, or None), asked for in its place among the checks
    (estimator.estimate.check_supported passes it); UnsupportedError with the reason."""
    if workload.mode == "decode" and spec.arch == "encoder":
        raise SpecError(
            f"mode='decode' is invalid for arch='encoder' ({spec.name}): "
            "decode needs a decoder; use train or prefill"
        )
    if workload.target_len is not None and spec.arch != "encoder-decoder":
        raise SpecError(
            f"target_len={workload.target_len} is only for encoder-decoder models, "
            f"not arch={spec.arch!r}"
        )
    if spec.is_patch_input and workload.seq_len != spec.n_positions:
        raise SpecError(
            f"seq_len={workload.seq_len} is invalid for patch input: "
            f"{spec.name} sees {spec.n_positions} positions (patches + class token)"
        )
    if workload.rope_scaling is not None and spec.position != "rotary":
        raise SpecError(
            f"rope_scaling={workload.rope_scaling} is invalid for {spec.name}: "
            f"it has {spec.position} positions, not rotary"
        )
    if workload.autocast and workload.mode != "train":
        raise UnsupportedError(
            f"autocast={workload.autocast!r} is modelled for mode='train' only, not "
            f"mode={workload.mode!r}"
        )
    why = unsupported() if unsupported is not None else None
    if why:
        raise UnsupportedError(why)
    limit = context_limit(spec, workload)
    if limit is not None:
        prompt = resolved_prompt_len(spec, workload)
        w = workload
        longest = context_used(w.mode, w.seq_len, w.target_len, prompt, w.new_tokens)
        if longest > limit:
            raise SpecError(f"seq_len={longest} is invalid: {context_limit_text(spec, workload)}")


def context_used(mode: str, seq_len: Any, target_len: Any, prompt: Any, new_tokens: Any) -> Any:
    """Most tokens one sequence holds, what ``context_limit`` bounds: the input and target
    lengths; in decode also the prompt (resolved) plus the new tokens. Sizes may be symbolic
    (estimator/sym.py)."""
    longest = vmax(seq_len, target_len or 0)
    if mode == "decode":
        longest = vmax(longest, prompt + new_tokens)
    return longest


def context_limit(spec: ModelSpec, workload: Workload) -> int | None:
    """Most tokens one sequence may hold (prompt + new tokens in decode), None when unlimited.

    Learned positions: the table's rows (max_seq_len). Rotary positions: max_seq_len (the
    config's max_position_embeddings, what the model was trained on) times
    ``workload.rope_scaling``; past it a rotary model still runs but is out of distribution,
    so a longer context is an explicit request. Sinusoidal and relative positions: no limit.
    """
    if spec.position == "learned":
        return spec.max_seq_len
    if spec.position == "rotary":
        return int(spec.max_seq_len * (workload.rope_scaling or 1.0))
    return None


def context_limit_text(spec: ModelSpec, workload: Workload) -> str:
    """Why the context ends where it does, with the way to raise it (one line)."""
    limit = context_limit(spec, workload)
    if spec.position == "learned":
        return f"{spec.name} has learned positions for at most max_seq_len={limit} tokens"
    if workload.rope_scaling:
        return (
            f"{spec.name} has rotary positions for max_seq_len={spec.max_seq_len} tokens, "
            f"x rope_scaling={workload.rope_scaling:g} = {limit}"
        )
    return (
        f"{spec.name} has rotary positions for max_seq_len={limit} tokens "
        "(rope_scaling, --rope-scaling FACTOR, raises it FACTOR-fold)"
    )


def resolved_prompt_len(spec: ModelSpec, workload: Workload) -> int:
    """Decode prompt length: given, else seq_len (decoder-only) or 1 start token (enc-dec)."""
    if workload.prompt_len is not None:
        return workload.prompt_len
    return 1 if spec.arch == "encoder-decoder" else workload.seq_len


def resolved_pattern(spec: ModelSpec, workload: Workload, stack: str) -> tuple[str, int | None]:
    """Self-attention pattern and window of ``stack`` for this workload.

    ``workload.attention_pattern`` applies to the model's own stack (the encoder of an
    encoder-only model, the decoder otherwise); the encoder of an encoder-decoder model always
    attends fully. Left out, decoders are causal (sliding-window where the model has one).
    """
    own_stack = "encoder" if spec.arch == "encoder" else "decoder"
    if stack == own_stack and workload.attention_pattern is not None:
        return workload.attention_pattern, workload.window
    if stack == "encoder":
        return "full", None
    if spec.sliding_window is not None:
        return "sliding_window", spec.sliding_window
    return "causal", None


def resolved_optimizer_impl(workload: Workload) -> str | None:
    """The given ``optimizer_impl``, else what torch picks on ``workload.device``: Adam, AdamW
    and SGD call _default_to_fused_or_foreach(use_fused=False) (torch/optim/optimizer.py):
    foreach when every parameter is on a foreach device (cuda), else the for-loop (cpu).
    Adafactor runs foreach only when asked (_adafactor.py adafactor: ``if foreach``)."""
    if workload.optimizer == "none":
        return None
    if workload.optimizer_impl is not None:
        return workload.optimizer_impl
    if workload.optimizer == "adamw-8bit":
        return "fused"
    if workload.optimizer == "adafactor":
        return "forloop"
    return "foreach" if workload.device == "cuda" else "forloop"


def decoder_len(spec: ModelSpec, workload: Workload) -> int:
    """Tokens of one full decoder pass: s_t (default s) for encoder-decoder, else s."""
    if spec.arch == "encoder-decoder":
        return workload.target_len or workload.seq_len
    return workload.seq_len


# issue 23
def resolved_defaults(spec: ModelSpec, workload: Workload) -> tuple[Workload, dict[str, Any]]:
    """``workload`` with the fields it left unset (not in ``model_fields_set``) filled from
    ``spec.usual`` (its dtype, attention and training dropout: estimator/spec/usual.py), and
    the values filled that differ from the Workload's own defaults. A given value is never
    overwritten; a workload without unset fields, or a spec without usual settings, comes
    back as is."""
    from estimator.spec.usual import usual_fields

    if spec.usual is None:
        return workload, {}
    given = set(workload.model_fields_set)
    filled = usual_fields(spec.usual, workload.mode, given)
    if workload.finetune in ("lora", "qlora"):  # issue 20: peft keeps the adapters fp32 already
        filled.pop("master_weights", None)
    base = Workload().model_dump()
    applied = {k: v for k, v in filled.items() if v != base[k]}
    if not applied:
        return workload, {}
    return workload.replace(**applied), applied


def defaults_text(spec: ModelSpec, applied: dict[str, Any]) -> str:
    """'' or one line naming the usual settings of ``spec`` that a workload received."""
    if not applied or spec.usual is None:
        return ""
    shown = ", ".join(f"{k}={v}" for k, v in applied.items())
    return f"{spec.name}'s usual settings applied: {shown} ({spec.usual.source})"
