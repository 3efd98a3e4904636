"""ModelSpec (the architecture) and Workload (what is run on it).

Both are frozen pydantic models that reject unknown fields. Derived defaults (n_kv_heads,
head_dim, lm_head, ...) are filled only when the user left them out; a given value is never
overwritten. Glossary (docs/glossary.md): batch_size b, seq_len s, d_model d, n_heads h,
n_kv_heads h_kv, head_dim d_h, d_ff, n_layers L, vocab_size V.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from estimator.dtypes import DType, FloatDType, KVCacheDType

Arch = Literal["encoder", "decoder", "encoder-decoder"]
Activation = Literal["relu", "gelu", "swiglu", "geglu"]
Norm = Literal["layernorm", "rmsnorm"]
NormPosition = Literal["pre", "post"]
Position = Literal["sinusoidal", "learned", "rotary", "relative", "none"]
Mode = Literal["train", "prefill", "decode"]
Optimizer = Literal["adamw", "adam", "sgd", "sgd-momentum", "adafactor", "adamw-8bit", "none"]
OptimizerImpl = Literal["fused", "foreach", "forloop"]
Checkpointing = Literal["none", "full"]
AttentionImpl = Literal["eager", "fused"]
AttentionPattern = Literal["full", "causal", "sliding_window", "chunked"]
CausalFlops = Literal["full", "triangle"]
Implementation = Literal["reference", "hf"]
Autocast = Literal["bf16", "fp16"]

GATED_ACTIVATIONS = ("swiglu", "geglu")

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


#: decode is estimated one step at a time: time and memory grow linearly with new_tokens
MAX_NEW_TOKENS = 2**17


class SpecError(ValueError):
    """A spec or workload that cannot be built; the message names field, value and options."""


class UnsupportedError(SpecError):
    """A valid request that tgauge does not model (yet); says what is missing."""


class ModelSpec(BaseModel):
    """The architecture of a Transformer, as the estimator and the reference model read it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    arch: Arch
    n_encoder_layers: int = Field(0, ge=0)
    n_decoder_layers: int = Field(0, ge=0)
    d_model: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int | None = Field(None, gt=0, description="default: n_heads (MHA)")
    head_dim: int | None = Field(None, gt=0, description="default: d_model // n_heads")
    d_ff: int = Field(gt=0)
    vocab_size: int | None = Field(None, gt=0, description="None only for patch (ViT) input")
    max_seq_len: int = Field(gt=0)
    activation: Activation = "gelu"
    norm: Norm = "layernorm"
    norm_position: NormPosition = "pre"
    norm_eps: float = Field(1e-5, gt=0)
    bias: bool = Field(True, description="biases on the attention and FFN linears")
    tie_embeddings: bool = True
    final_norm: bool = Field(True, description="a norm after the last layer of each stack")
    embed_norm: bool = Field(False, description="a norm right after the embeddings (BERT, BART)")
    n_token_types: int = Field(0, ge=0, description="segment embeddings (BERT: 2)")
    pooler: bool = Field(False, description="dense d->d + tanh on the first token (BERT, ViT)")
    lm_head: bool | None = Field(None, description="default: True unless encoder-only")
    head_transform: bool = Field(
        False, description="dense d->d + act + norm before the LM head (BERT's MLM head)"
    )
    lm_head_bias: bool = Field(False, description="a bias [V] on the LM head (BERT's MLM head)")
    n_labels: int = Field(
        0, ge=0, description="a classifier d -> n_labels on the pooled (else first) token"
    )
    position: Position = "learned"
    position_offset: int = Field(0, ge=0, description="extra rows of a learned table (BART: 2)")
    relative_buckets: int = Field(32, gt=0)
    relative_max_distance: int = Field(128, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    sliding_window: int | None = Field(None, gt=0, description="the model's own window (Mistral)")
    image_size: int | None = Field(None, gt=0)
    patch_size: int | None = Field(None, gt=0)
    n_channels: int | None = Field(None, gt=0)
    implementation: Implementation = Field(
        "reference", description="the code the spec describes: our reference model or HF's"
    )
    hf_architecture: str | None = Field(
        None, description="the transformers class (config.json's architectures), if any"
    )
    activation_fn: str | None = Field(
        None,
        description="the activation function as config.json names it (transformers' ACT2FN "
        "key, e.g. gelu_new: tanh-approximate GELU written out); None: the plain `activation`",
    )
    fused_qkv: bool = Field(
        False, description="one projection makes q, k and v (GPT-2's c_attn), their views"
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_n_layers(cls, data: Any) -> Any:
        """Let a spec file say ``n_layers`` for a single-stack model."""
        if isinstance(data, dict) and "n_layers" in data:
            both = [k for k in ("n_encoder_layers", "n_decoder_layers") if k in data]
            if both:
                raise SpecError(
                    f"n_layers={data['n_layers']!r} conflicts with {both[0]}={data[both[0]]!r}: "
                    "give n_layers (one stack) or the per-stack counts, not both"
                )
            data = dict(data)
            n = data.pop("n_layers")
            key = "n_encoder_layers" if data.get("arch") == "encoder" else "n_decoder_layers"
            if data.get("arch") == "encoder-decoder":
                data.setdefault("n_encoder_layers", n)
            data.setdefault(key, n)
        return data

    @model_validator(mode="after")
    def _check_and_fill(self) -> ModelSpec:
        def fail(field: str, value: object, allowed: str) -> None:
            raise SpecError(f"{field}={value!r} is invalid: {allowed}")

        stacks = {
            "encoder": (True, False),
            "decoder": (False, True),
            "encoder-decoder": (True, True),
        }
        need_enc, need_dec = stacks[self.arch]
        if need_enc != (self.n_encoder_layers > 0):
            fail(
                "n_encoder_layers",
                self.n_encoder_layers,
                f"arch={self.arch!r} needs " + ("at least 1" if need_enc else "0"),
            )
        if need_dec != (self.n_decoder_layers > 0):
            fail(
                "n_decoder_layers",
                self.n_decoder_layers,
                f"arch={self.arch!r} needs " + ("at least 1" if need_dec else "0"),
            )
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                fail(
                    "n_heads",
                    self.n_heads,
                    f"must divide d_model={self.d_model} (or give head_dim explicitly)",
                )
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.n_heads % self.n_kv_heads:
            fail("n_kv_heads", self.n_kv_heads, f"must divide n_heads={self.n_heads}")
        if self.position == "rotary" and self.head_dim % 2:
            fail("head_dim", self.head_dim, "rotary positions need an even head_dim")
        if self.lm_head is None:
            object.__setattr__(self, "lm_head", self.arch != "encoder")
        patch = (self.image_size, self.patch_size, self.n_channels)
        if any(v is not None for v in patch):
            if None in patch:
                fail(
                    "patch_size",
                    self.patch_size,
                    "patch input needs image_size, patch_size and n_channels together",
                )
            if self.arch != "encoder":
                fail("arch", self.arch, "patch (ViT) input is encoder-only")
            if self.image_size % self.patch_size:
                fail("patch_size", self.patch_size, f"must divide image_size={self.image_size}")
            if self.n_positions > self.max_seq_len:
                fail("max_seq_len", self.max_seq_len, f"must be >= {self.n_positions} patches + 1")
        elif self.vocab_size is None:
            fail("vocab_size", None, "a token model needs vocab_size > 0")
        if self.lm_head and self.vocab_size is None:
            fail("lm_head", True, "an LM head needs vocab_size")
        if self.n_labels and (self.lm_head or self.arch != "encoder"):
            fail("n_labels", self.n_labels, "a classifier heads an encoder without an LM head")
        if (self.head_transform or self.lm_head_bias) and not self.lm_head:
            fail("lm_head", self.lm_head, "head_transform / lm_head_bias need an LM head")
        if self.n_token_types and self.vocab_size is None:
            fail("n_token_types", self.n_token_types, "segment embeddings need token input")
        return self

    # ---- derived quantities (glossary symbols) -------------------------------------------
    @property
    def is_patch_input(self) -> bool:
        return self.patch_size is not None

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2 if self.is_patch_input else 0

    @property
    def n_positions(self) -> int:
        """Sequence length of a patch model: patches + the class token."""
        return self.n_patches + 1

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def gated(self) -> bool:
        return self.activation in GATED_ACTIVATIONS

    @property
    def stacks(self) -> tuple[tuple[str, int], ...]:
        """(stack name, layer count) for each stack the model has, encoder first."""
        out = []
        if self.n_encoder_layers:
            out.append(("encoder", self.n_encoder_layers))
        if self.n_decoder_layers:
            out.append(("decoder", self.n_decoder_layers))
        return tuple(out)

    @property
    def n_layers(self) -> int:
        return self.n_encoder_layers + self.n_decoder_layers

    @classmethod
    def from_hf_config(cls, path_or_dict: str | Path | dict[str, Any]) -> ModelSpec:
        """Read a Hugging Face config.json (gpt2, bert, t5, bart, vit, llama, mistral)."""
        from estimator.hf_config import spec_from_hf_config

        return spec_from_hf_config(path_or_dict)


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
        description="decode: number of one-token steps (the estimate walks every step)",
    )
    dtype: DType = Field("fp32", description="dtype the weights are stored in")
    compute_dtype: FloatDType | None = Field(
        None, description="activations; default dtype, or bf16 for int8/int4 weights"
    )
    master_weights: bool = Field(False, description="mixed precision: fp32 master copy")
    autocast: Autocast | None = Field(
        None,
        description="train under torch.autocast(device, dtype): fp32 weights, grads and "
        "optimizer states; matmuls run in this dtype on cast copies (estimator/autocast.py)",
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


def revalidated(spec: ModelSpec, workload: Workload) -> tuple[ModelSpec, Workload]:
    """``spec`` and ``workload`` validated again: a ``model_copy(update=...)`` bypasses the
    field constraints (``seq_len=-5`` would give negative FLOPs); SpecError / ValidationError
    for such a copy. Cheap next to an estimate."""
    return (
        ModelSpec.model_validate(spec.model_dump()),
        Workload.model_validate(workload.model_dump()),
    )


def check_compatible(spec: ModelSpec, workload: Workload) -> None:
    """Raise SpecError for a workload the model cannot run (e.g. decode on an encoder)."""
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
    if workload.autocast:
        from estimator.autocast import unsupported

        why = unsupported(spec, workload)
        if why:
            raise UnsupportedError(f"autocast={workload.autocast!r} is not modelled for {why}")
    limit = context_limit(spec, workload)
    if limit is not None:
        longest = max(workload.seq_len, workload.target_len or 0)
        if workload.mode == "decode":
            longest = max(longest, resolved_prompt_len(spec, workload) + workload.new_tokens)
        if longest > limit:
            raise SpecError(f"seq_len={longest} is invalid: {context_limit_text(spec, workload)}")


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
