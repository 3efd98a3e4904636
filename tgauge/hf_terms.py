"""Hugging Face module names -> glossary terms (docs/glossary.md), per family: data, not code.

The profiler names a term after the module path with layer indices dropped
(``model.layers.3.mlp.up_proj`` -> ``model.layers.mlp.up_proj``); the task class's base-model
prefix (``transformer.``, ``model.``, ``bert.``, ``vit.``) is dropped first. One HF module may
hold several glossary terms (GPT-2's fused ``c_attn`` is q, k and v; an attention module's own
saved tensors are the scores, mix or sdpa terms): its row is then named by the group and the
estimator's terms of the group are summed into it. An HF term without an entry is shown as
``hf:NAME``; an estimator term without an HF module keeps its own name: nothing is dropped.
"""

from __future__ import annotations

from typing import Any

Table = dict[str, tuple[str, ...]]

ROOT_TERMS = ("(root)", "(outside)")  # the loss, computed in the model's forward or after it


def _attn(stack: str, kind: str = "self_attn") -> tuple[str, ...]:
    """What an HF attention module's own ops save: rotary / bias, scores, mix, sdpa."""
    base = f"{stack}.layers.{kind}"
    return (base, f"{base}.scores", f"{base}.scores.dropout", f"{base}.mix", f"{base}.sdpa")


def _proj(stack: str, kind: str, hf: str, names: dict[str, str]) -> Table:
    return {f"{hf}.{k}": (f"{stack}.layers.{kind}.{v}",) for k, v in names.items()}


_QKVO = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj"}


def _gpt2() -> Table:
    L = "decoder.layers"
    return {
        "wte": ("embed",), "wpe": ("decoder.pos",), "drop": ("decoder.dropout",),
        "h.ln_1": (f"{L}.attn_norm",),
        "h.attn.c_attn": (f"{L}.self_attn.q_proj", f"{L}.self_attn.k_proj",
                          f"{L}.self_attn.v_proj"),
        "h.attn": _attn("decoder"), "h.attn.attn_dropout": (f"{L}.self_attn.scores.dropout",),
        "h.attn.c_proj": (f"{L}.self_attn.o_proj",), "h.attn.resid_dropout": (f"{L}.dropout",),
        "h.ln_2": (f"{L}.ffn_norm",), "h.mlp.c_fc": (f"{L}.ffn.up",),
        "h.mlp.act": (f"{L}.ffn.act",), "h.mlp.c_proj": (f"{L}.ffn.down",),
        "h.mlp.dropout": (f"{L}.dropout",), "ln_f": ("decoder.final_norm",),
        "lm_head": ("lm_head",),
    }  # fmt: skip


def _llama() -> Table:
    L = "decoder.layers"
    return {
        "embed_tokens": ("embed",), "layers.input_layernorm": (f"{L}.attn_norm",),
        **_proj("decoder", "self_attn", "layers.self_attn", {**_QKVO, "o_proj": "o_proj"}),
        "layers.self_attn": _attn("decoder"), "rotary_emb": ("decoder.pos",),
        "layers.post_attention_layernorm": (f"{L}.ffn_norm",),
        "layers.mlp.gate_proj": (f"{L}.ffn.gate",), "layers.mlp.up_proj": (f"{L}.ffn.up",),
        "layers.mlp.act_fn": (f"{L}.ffn.act",), "layers.mlp": (f"{L}.ffn",),
        "layers.mlp.down_proj": (f"{L}.ffn.down",), "norm": ("decoder.final_norm",),
        "lm_head": ("lm_head",),
    }  # fmt: skip


def _phi3() -> Table:
    """modeling_phi3: Llama's names but one qkv_proj (q, k, v) and one gate_up_proj."""
    L = "decoder.layers"
    split = ("layers.self_attn.q_", "layers.self_attn.k_", "layers.self_attn.v_",
             "layers.mlp.gate_", "layers.mlp.up_")  # fmt: skip
    table = {k: v for k, v in _llama().items() if not k.startswith(split)}
    table["layers.self_attn.qkv_proj"] = tuple(f"{L}.self_attn.{k}" for k in _QKVO)
    table["layers.mlp.gate_up_proj"] = (f"{L}.ffn.gate", f"{L}.ffn.up")
    table["layers.mlp.activation_fn"] = (f"{L}.ffn.act",)
    return table


def _qwen3() -> Table:
    """modeling_qwen3 (issue 22d): Llama's names plus the attention's q_norm and k_norm."""
    L = "decoder.layers"
    return {**_llama(), "layers.self_attn.q_norm": (f"{L}.self_attn.q_norm",),
            "layers.self_attn.k_norm": (f"{L}.self_attn.k_norm",)}  # fmt: skip


def _gpt_neox() -> Table:
    """modeling_gpt_neox (issue 22d): one query_key_value (q, k, v), dense is o_proj."""
    L = "decoder.layers"
    return {
        "embed_in": ("embed",), "emb_dropout": ("decoder.dropout",),
        "rotary_emb": ("decoder.pos",), "layers.input_layernorm": (f"{L}.attn_norm",),
        "layers.attention.query_key_value": tuple(f"{L}.self_attn.{k}" for k in _QKVO),
        "layers.attention": _attn("decoder"), "layers.attention.dense": (f"{L}.self_attn.o_proj",),
        "layers.post_attention_layernorm": (f"{L}.ffn_norm",),
        "layers.post_attention_dropout": (f"{L}.dropout",),
        "layers.post_mlp_dropout": (f"{L}.dropout",),
        "layers.mlp.dense_h_to_4h": (f"{L}.ffn.up",), "layers.mlp.act": (f"{L}.ffn.act",),
        "layers.mlp.dense_4h_to_h": (f"{L}.ffn.down",), "final_layer_norm": ("decoder.final_norm",),
        "lm_head": ("lm_head",),
    }  # fmt: skip


def _gemma2() -> Table:
    """modeling_gemma2 (issue 22d): Llama's names; post_attention_layernorm is the attention's
    output norm, pre_/post_feedforward_layernorm the FFN's input and output norms."""
    L = "decoder.layers"
    return {**_llama(), "layers.post_attention_layernorm": (f"{L}.attn_out_norm",),
            "layers.pre_feedforward_layernorm": (f"{L}.ffn_norm",),
            "layers.post_feedforward_layernorm": (f"{L}.ffn_out_norm",)}  # fmt: skip


def _mixtral() -> Table:
    """modeling_mixtral: Llama's names but the MoE block (issue 22): mlp.gate is the router,
    mlp.experts the experts (their act_fn apart), the block's own ops save nothing."""
    L = "decoder.layers"
    table = {k: v for k, v in _llama().items() if not k.startswith("layers.mlp")}
    table["layers.mlp.gate"] = (f"{L}.ffn.router",)
    table["layers.mlp.experts"] = tuple(f"{L}.ffn.experts{k}" for k in ("", ".gate", ".up",
                                                                        ".down"))  # fmt: skip
    table["layers.mlp.experts.act_fn"] = (f"{L}.ffn.experts.act",)
    table["layers.mlp"] = (f"{L}.ffn",)
    return table


def _deepseek_v3() -> Table:
    """modeling_deepseek_v3 (issue 22v): Llama's names, latent attention's projections and
    norms (the glossary's: estimator/terms/params.py _latent_attention)."""
    mla = {"q_a_proj": "q_a_proj", "q_a_layernorm": "q_a_norm", "q_b_proj": "q_b_proj",
           "kv_a_proj_with_mqa": "kv_a_proj", "kv_a_layernorm": "kv_a_norm",
           "kv_b_proj": "kv_b_proj"}  # fmt: skip
    L = "decoder.layers"
    shared = {"gate_proj": "gate", "up_proj": "up", "act_fn": "act", "down_proj": "down"}
    return {**_llama(), **_proj("decoder", "self_attn", "layers.self_attn", mla),
            "layers.mlp.gate": (f"{L}.ffn.router",),
            "layers.mlp.experts": tuple(f"{L}.ffn.experts{k}" for k in ("", ".gate", ".up",
                                                                        ".down")),
            "layers.mlp.experts.act_fn": (f"{L}.ffn.experts.act",),
            **_proj("decoder", "ffn.shared", "layers.mlp.shared_experts", shared),
            "layers.mlp.shared_experts": (f"{L}.ffn.shared",)}  # fmt: skip


def _bert() -> Table:
    L, a = "encoder.layers", "encoder.layer.attention"
    return {
        "embeddings.word_embeddings": ("embed",),
        "embeddings.position_embeddings": ("encoder.pos",),
        "embeddings.token_type_embeddings": ("encoder.token_type",),
        "embeddings.LayerNorm": ("encoder.embed_norm",), "embeddings.dropout": ("encoder.dropout",),
        **_proj("encoder", "self_attn", f"{a}.self",
                {"query": "q_proj", "key": "k_proj", "value": "v_proj"}),
        f"{a}.self": _attn("encoder"), f"{a}.self.dropout": (f"{L}.self_attn.scores.dropout",),
        f"{a}.output.dense": (f"{L}.self_attn.o_proj",),
        f"{a}.output.LayerNorm": (f"{L}.attn_norm",), f"{a}.output.dropout": (f"{L}.dropout",),
        "encoder.layer.intermediate.dense": (f"{L}.ffn.up",),
        "encoder.layer.intermediate.intermediate_act_fn": (f"{L}.ffn.act",),
        "encoder.layer.output.dense": (f"{L}.ffn.down",),
        "encoder.layer.output.LayerNorm": (f"{L}.ffn_norm",),
        "encoder.layer.output.dropout": (f"{L}.dropout",),
        "pooler.dense": ("pooler.proj",), "pooler.activation": ("pooler.act",),
        "cls.predictions.transform.dense": ("head_transform.dense",),
        "cls.predictions.transform.transform_act_fn": ("head_transform.act",),
        "cls.predictions.transform.LayerNorm": ("head_transform.norm",),
        "cls.predictions.decoder": ("lm_head",), "cls.predictions": ("lm_head",),
        "dropout": ("classifier.dropout",), "classifier": ("classifier",),  # ForSequenceCls.
    }  # fmt: skip


def _t5_stack(stack: str) -> Table:
    L, b = f"{stack}.layers", f"{stack}.block.layer"
    norms = (f"{L}.attn_norm", *((f"{L}.cross_norm",) if stack == "decoder" else ()),
             f"{L}.ffn_norm")  # fmt: skip
    qkvo = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
    out = {
        f"{stack}.embed_tokens": ("embed",), f"{stack}.dropout": (f"{stack}.dropout",),
        **_proj(stack, "self_attn", f"{b}.SelfAttention", qkvo),
        f"{b}.SelfAttention": _attn(stack),
        f"{b}.SelfAttention.relative_attention_bias": (f"{stack}.pos",),
        f"{b}.layer_norm": norms, f"{b}.dropout": (f"{L}.dropout",),
        f"{b}.DenseReluDense.wi": (f"{L}.ffn.up",), f"{b}.DenseReluDense.wi_0": (f"{L}.ffn.gate",),
        f"{b}.DenseReluDense.wi_1": (f"{L}.ffn.up",), f"{b}.DenseReluDense.act": (f"{L}.ffn.act",),
        f"{b}.DenseReluDense": (f"{L}.ffn",), f"{b}.DenseReluDense.wo": (f"{L}.ffn.down",),
        f"{stack}.final_layer_norm": (f"{stack}.final_norm",),
    }  # fmt: skip
    if stack == "decoder":
        out.update(_proj(stack, "cross_attn", f"{b}.EncDecAttention", qkvo))
        out[f"{b}.EncDecAttention"] = _attn(stack, "cross_attn")
    return out


def _t5() -> Table:
    return {"shared": ("embed",), **_t5_stack("encoder"), **_t5_stack("decoder"),
            "lm_head": ("lm_head",)}  # fmt: skip


def _bart_stack(stack: str) -> Table:
    L, s = f"{stack}.layers", f"{stack}.layers"
    attn = {**_QKVO, "out_proj": "o_proj"}
    out = {
        f"{stack}.embed_tokens": ("embed",), f"{stack}.embed_positions": (f"{stack}.pos",),
        f"{stack}.layernorm_embedding": (f"{stack}.embed_norm",),
        **_proj(stack, "self_attn", f"{s}.self_attn", attn), f"{s}.self_attn": _attn(stack),
        f"{s}.self_attn_layer_norm": (f"{L}.attn_norm",), f"{s}.fc1": (f"{L}.ffn.up",),
        f"{s}.activation_fn": (f"{L}.ffn.act",), f"{s}.fc2": (f"{L}.ffn.down",),
        f"{s}.final_layer_norm": (f"{L}.ffn_norm",),  # BART: the FFN's post-norm
    }  # fmt: skip
    if stack == "decoder":
        out.update(_proj(stack, "cross_attn", f"{s}.encoder_attn", attn))
        out[f"{s}.encoder_attn"] = _attn(stack, "cross_attn")
        out[f"{s}.encoder_attn_layer_norm"] = (f"{L}.cross_norm",)
    return out


def _bart() -> Table:
    return {"shared": ("embed",), **_bart_stack("encoder"), **_bart_stack("decoder"),
            "lm_head": ("lm_head",)}  # fmt: skip


def _vit() -> Table:
    L = "encoder.layers"
    return {
        "embeddings": ("encoder.patch", "encoder.pos"),  # cls token, position table
        "embeddings.patch_embeddings.projection": ("encoder.patch.proj",),
        "layers.layernorm_before": (f"{L}.attn_norm",),
        **_proj("encoder", "self_attn", "layers.attention", {**_QKVO, "o_proj": "o_proj"}),
        "layers.attention": _attn("encoder"), "layers.layernorm_after": (f"{L}.ffn_norm",),
        "layers.mlp.fc1": (f"{L}.ffn.up",), "layers.mlp.activation_fn": (f"{L}.ffn.act",),
        "layers.mlp.fc2": (f"{L}.ffn.down",), "layernorm": ("encoder.final_norm",),
        "pooler.dense": ("pooler.proj",), "pooler.activation": ("pooler.act",),
        "classifier": ("classifier",),  # ViTForImageClassification
    }  # fmt: skip


HF_TERMS: dict[str, Table] = {
    "gpt2": _gpt2(),
    "llama": _llama(),
    "mistral": _llama(),
    "qwen2": _llama(),  # issue 22: modeling_qwen2 has Llama's module names
    "phi3": _phi3(),
    "qwen3": _qwen3(),  # issue 22d
    "gpt_neox": _gpt_neox(),  # issue 22d
    "gemma2": _gemma2(),  # issue 22d
    "mixtral": _mixtral(),  # issue 22
    "deepseek_v3": _deepseek_v3(),  # issue 22v
    "bert": _bert(),
    "t5": _t5(),
    "bart": _bart(),
    "vit": _vit(),
}


def group_name(group: tuple[str, ...]) -> str:
    """One glossary term, or ``prefix.{a,b}`` for a group sharing a prefix (else a + b)."""
    if len(group) == 1:
        return group[0]
    head = group[0].rsplit(".", 1)[0] + "."
    if all(g.startswith(head) for g in group):
        return head + "{" + ",".join(g[len(head) :] for g in group) + "}"
    return " + ".join(group)


def map_terms(
    family: str, prefix: str, measured: dict[str, int], predicted: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """(measured, predicted) keyed alike: HF terms renamed by the family's table (``prefix``,
    the base-model prefix, dropped first), the estimator's terms summed into their group."""
    table = HF_TERMS.get(family, {})
    member_of = {g: group_name(group) for group in table.values() for g in group}
    out_measured: dict[str, int] = {}
    for name, value in measured.items():
        name, lora = _peft_name(name)  # issue 20: peft's wrapper and adapters
        bare = name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else name
        if bare in ROOT_TERMS:
            key = "loss"
        elif bare in table:
            key = group_name(table[bare]) + lora
        else:
            key = f"hf:{name}{lora}"
        out_measured[key] = out_measured.get(key, 0) + value
    out_predicted: dict[str, int] = {}
    for name, value in predicted.items():
        module, lora = _lora_suffix(name)
        key = member_of.get(module, module) + lora
        out_predicted[key] = out_predicted.get(key, 0) + value
    return out_measured, out_predicted


#: the modules peft's get_peft_model wraps around the model (PeftModel.base_model.model)
PEFT_WRAPPER = "base_model.model"


def _lora_suffix(name: str) -> tuple[str, str]:
    """(module, ".lora_A" | ".lora_B" | "") of a term name."""
    for part in (".lora_A", ".lora_B"):
        if name.endswith(part):
            return name[: -len(part)], part
    return name, ""


def _peft_name(name: str) -> tuple[str, str]:
    """An HF term measured on a peft model, as on the bare model: the wrapper prefix
    dropped (its root is the model's root), a wrapped linear's ``base_layer`` its own, the
    adapter's name dropped
    (``q_proj.lora_A.default`` -> q_proj, ".lora_A"), peft/tuners/lora/layer.py."""
    if name == PEFT_WRAPPER:
        return "(root)", ""
    if name.startswith(PEFT_WRAPPER + "."):
        name = name[len(PEFT_WRAPPER) + 1 :].replace(".base_layer", "")
        for part in (".lora_A.", ".lora_B."):
            if part in name:
                module, _, _ = name.partition(part)
                return module, part[:-1]
        if ".lora_dropout." in name:  # its mask: counted with lora_A (rules/finetune.py)
            return name.partition(".lora_dropout.")[0], ".lora_A"
    return name, ""


def base_prefix(model: Any) -> str:
    """The task class's base-model attribute (``transformer``, ``model``, ``bert``, ``vit``)
    when the class wraps one, else ''."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    if type(model).__name__.startswith("Peft") and inner is not None:  # issue 20: peft
        return base_prefix(inner)  # names are unwrapped first (_peft_name)
    prefix = getattr(model, "base_model_prefix", "")
    return prefix if prefix and hasattr(model, prefix) else ""
