"""ModelSpec: the architecture of a Transformer, as the estimator and the reference model read it.

A frozen pydantic model that rejects unknown fields. Derived defaults (n_kv_heads, head_dim,
lm_head, ...) are filled only when the user left them out; a given value is never overwritten.
Glossary (docs/glossary.md): batch_size b, seq_len s, d_model d, n_heads h, n_kv_heads h_kv,
head_dim d_h, d_ff, n_layers L, vocab_size V.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from estimator.spec.errors import SpecError
from estimator.spec.usual import UsualSettings

Arch = Literal["encoder", "decoder", "encoder-decoder"]
Activation = Literal["relu", "gelu", "swiglu", "geglu"]
Norm = Literal["layernorm", "rmsnorm"]
NormPosition = Literal["pre", "post"]
Position = Literal["sinusoidal", "learned", "rotary", "relative", "none", "xl_relative"]
Implementation = Literal["reference", "hf"]

GATED_ACTIVATIONS = ("swiglu", "geglu")
# issue 22
QkNorm = Literal["none", "head", "full"]
SublayerNorm = Literal["input", "sandwich", "output"]
ParallelBlock = Literal["none", "one_norm", "two_norms"]
LayerKind = Literal["full", "sliding"]
RouterScoring = Literal["softmax", "sigmoid"]  # issue 22e


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
    # issue 23
    usual: UsualSettings | None = Field(
        None,
        description="how the model is usually run (dtype, attention, dropout): the Workload "
        "fields a user leaves out are filled from it (estimator/spec/usual.py)",
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
    def self_cache_width(self) -> int:
        """Values one layer's self-attention KV cache keeps per position and sequence: keys
        and values, 2 kv_dim; under multi-head latent attention the normed latent and the
        rotated k_rot, kv_lora_rank + qk_rope_head_dim (estimator/terms/kv_cache.py)."""
        if self.kv_lora_rank:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_dim

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
        """Read a Hugging Face config.json (gpt2, bert, t5, bart, vit, llama, mistral and the
        families of estimator/spec/hf_families.py): a config dict, a config.json path or the
        folder holding it (estimator/spec/hf_config.py)."""
        from estimator.spec.hf_config import hf_spec_fields

        return cls(**hf_spec_fields(path_or_dict))

    # issue 22: the fields the Qwen, Gemma, Phi, Mixtral, DeepSeek, NeoX, Falcon, OLMo 2,
    # Gopher families need; every default is the behaviour before them
    qkv_bias: bool | None = Field(None, description="biases on q/k/v (fused qkv); default: bias")
    o_bias: bool | None = Field(None, description="a bias on the output projection; default: bias")
    ffn_bias: bool | None = Field(None, description="biases on the FFN linears; default: bias")
    qk_norm: QkNorm = Field(
        "none",
        description="a norm on q and on k before rotary: 'head' over each head's d_h (Qwen3, "
        "Gemma 3), 'full' over h*d_h and h_kv*d_h (OLMo 2)",
    )
    sublayer_norm: SublayerNorm = Field(
        "input",
        description="with norm_position='pre': 'input' norms each sublayer's input; 'sandwich' "
        "also its output before the residual add (Gemma 2/3); 'output' only its output (OLMo 2)",
    )
    parallel_block: ParallelBlock = Field(
        "none",
        description="attention and FFN read the same input and add to one residual (GPT-J, "
        "NeoX, Falcon): 'one_norm' one shared input norm, 'two_norms' one norm each",
    )
    rotary_dim: int | None = Field(
        None,
        gt=0,
        description="dims of each head that rotary rotates (partial rotary); default: head_dim",
    )
    layer_pattern: tuple[LayerKind, ...] | None = Field(
        None,
        description="per decoder layer 'full' or 'sliding' (a window of sliding_window): "
        "Gemma 2/3's local/global layers; None: every layer as the workload's pattern",
    )
    attn_softcap: float | None = Field(
        None, gt=0, description="scores -> c * tanh(scores / c) before the softmax (Gemma 2)"
    )
    final_softcap: float | None = Field(
        None, gt=0, description="logits -> c * tanh(logits / c) (Gemma 2): [n, V] tensors"
    )
    embed_scale: bool = Field(False, description="embeddings times sqrt(d_model) (Gemma)")
    n_experts: int = Field(0, ge=0, description="routed experts per MoE layer (0: dense FFNs)")
    n_experts_per_token: int = Field(0, ge=0, description="top-k routed experts per token")
    n_shared_experts: int = Field(
        0,
        ge=0,
        description="shared experts every token runs (DeepSeek: one MLP of "
        "n_shared_experts * expert_d_ff; Qwen2-MoE: one of shared_expert_d_ff)",
    )
    expert_d_ff: int | None = Field(None, gt=0, description="one expert's d_ff; default: d_ff")
    shared_expert_d_ff: int | None = Field(
        None, gt=0, description="the shared MLP's d_ff; default n_shared_experts * expert_d_ff"
    )
    shared_expert_gate: bool = Field(
        False, description="a sigmoid gate Linear(d, 1) on the shared expert (Qwen2-MoE)"
    )
    dense_layers: tuple[int, ...] = Field(
        (),
        description="decoder layers with a dense FFN of d_ff in an MoE model (DeepSeek's "
        "first_k_dense_replace, Qwen's mlp_only_layers / decoder_sparse_step)",
    )
    q_lora_rank: int | None = Field(None, gt=0, description="MLA: q through a rank-r bottleneck")
    kv_lora_rank: int | None = Field(
        None, gt=0, description="multi-head latent attention (DeepSeek-V2/V3): the latent width"
    )
    qk_rope_head_dim: int | None = Field(None, gt=0, description="MLA: rotary part of q, k")
    qk_nope_head_dim: int | None = Field(None, gt=0, description="MLA: non-rotary part of q, k")
    v_head_dim: int | None = Field(None, gt=0, description="MLA: the values' head dim")
    router_fp32: bool = Field(
        False,
        description="the router's weight stays fp32 in a low-precision model and routes "
        "in fp32 (DeepSeek-V3: _keep_in_fp32_modules_strict)",
    )
    fused_gate_up: bool = Field(
        False, description="one projection makes gate and up, their views (Phi-3's gate_up_proj)"
    )
    # issue 22v: DeepseekV3TopkRouter's group-limited choice (what its saved tensors are sized by)
    router_groups: int | None = Field(
        None, gt=0, description="DeepSeek-V3's n_group: expert groups the router ranks first"
    )
    router_topk_groups: int | None = Field(
        None, gt=0, description="DeepSeek-V3's topk_group: groups whose experts may be chosen"
    )
    router_norm_topk: bool | None = Field(
        None, description="DeepSeek-V3's norm_topk_prob: the top-k weights divided by their sum"
    )

    # issue 22e: the reference model's router (reference_model/moe.py); a transformers class
    # scores as its code does (Mixtral softmax, DeepSeek-V3 sigmoid)
    router_scoring: RouterScoring = Field(
        "softmax", description="the router's scores before top-k: softmax or sigmoid"
    )

    @model_validator(mode="after")
    def _check_issue22(self) -> ModelSpec:
        from estimator.spec.features import check_and_fill

        return check_and_fill(self)
