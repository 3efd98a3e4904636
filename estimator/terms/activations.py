"""Activations saved for backward, per module of the reference model (training, bytes).

Each term is the bytes of the storages autograd saves, attributed to the module that FIRST
saves that storage (docs/glossary.md); parameters and buffers are excluded. One function per
module group returns its saved set, so a measured correction changes one line. Korthikanti et
al. 2022 (eq. 1, 34 s b h + 5 a s^2 b) count the same tensors with fp16 and a dropout mask;
here each is a named term in the compute dtype (cb bytes), n = b * s tokens:
  attn_norm   LayerNorm: input [n,d] + mean, rstd [n] fp32 | RMSNorm (written out): input,
              rms [n,1], x*rms [n,d]
  q_proj      its input [n,d] (k_proj, v_proj save the same storage: 0)
  scores      eager: Q and K as [b,h,s,d_h] (K repeated to h heads for GQA), softmax output
              [b,h,s,s_k], the pattern's bool mask [s,s_k] (masked_fill(~ok)) unless full;
              scores.dropout its bool mask [b,h,s,s_k] when dropout > 0
  mix         the dropout output [b,h,s,s_k] when dropout > 0 (else the softmax output: 0), V
  sdpa        fused: q [n,h d_h], k, v [n,h_kv d_h], out [n,h d_h], logsumexp [b,h,s] fp32
  o_proj      its input [n, h d_h] (heads merged: a new tensor)
  ffn_norm, ffn.up   as attn_norm, q_proj
  ffn.act     gelu: its input [n,d_ff]; relu: its output; gated: the gate output
  ffn         gated only: the product saves act(gate) and up [n,d_ff] each
  ffn.down    its input [n,d_ff] (relu: the act output, already saved: 0)
  dropout     residual dropout masks (bool [n,d]) per sublayer when dropout > 0
Stack level: embed saves the token ids (int64), learned positions their ids [s] int64,
rotary its cos and sin [s,d_h] per call (q and k, every layer), relative bias its bucket ids
[s,s_k] int64 per layer; final_norm as a norm; lm_head its input; loss the log-softmax
[n,V], the targets (int64) and nll's total_weight (0-dim). Encoder-decoder: the encoder
output is saved once, by the first decoder layer's cross_attn.k_proj. pooler.proj saves a
view of the stack output (the whole [n,d] storage counts) and tanh its output [b,d].
head_transform (BERT's MLM head): dense and act save their inputs [n,d], norm as a norm.
classifier: its input (the pooled output, else x[:, 0]: the [n,d] storage), the loss its
log-softmax [b,n_labels], targets [b] and total_weight.
{stack}.dropout: the embedding dropout mask. Assumptions a measurement must confirm: chunked
eager scores are [b,h,s/c,c,c] with a mask of as many entries, fused sdpa gets h_kv heads.
Under torch.autocast (``workload.autocast``, estimator/rules/autocast.py): what matmuls make is
in the autocast dtype (``sh.ib``), the norms and the loss stay fp32 (cb), and every linear saves
its own low cast of an fp32 input and its weight's low copy (rule ``saved.linear@autocast``).
What a module kind saves is its rule (``saved.*``, estimator/rules/reference/saved.py and the
implementations' own): this module walks the model and names the terms.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.registry import rule
from estimator.shapes import Shapes, attention_pairs, for_layer_kind
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.features import moe_layers
from estimator.spec.model import ModelSpec
from estimator.sym import ceil_div
from estimator.terms.finetune import (
    freeze_exact,
    frozen_flags,
    frozen_input_norm,
    lora_layer_targets,
)

Terms = dict[str, Any]
FP32_BYTES = 4


def linear_saved(spec: ModelSpec, sh: Shapes, n: Any, d_in: int, d_out: int,
                 stream: bool, fresh: bool = True) -> Any:  # fmt: skip
    """Bytes one nn.Linear over n tokens saves beyond what earlier modules saved: rule
    ``saved.linear`` (estimator/rules/autocast.py has its autocast variant). ``stream``: its
    input is a norm output or the residual stream (not a matmul's output); ``fresh``: no
    earlier module saved that input (k_proj and v_proj share q_proj's)."""
    return rule("saved.linear", spec, sh)(spec, sh, n, d_in, d_out, stream, fresh)


def mask_bytes(sh: Shapes, numel: Any) -> Any:
    """A dropout mask of ``numel`` entries: native_dropout keeps it as bool on CUDA (1 byte)
    and in the compute dtype on CPU (the CPU kernel multiplies by a float mask)."""
    return numel if sh.device == "cuda" else numel * sh.cb


def norm_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    """Bytes a norm over [n, d] saves (rule ``saved.norm``: the reference's in
    estimator/rules/reference/saved.py, HF's in estimator/rules/hf/precision.py)."""
    return rule("saved.norm", spec, sh)(spec, sh, n)


def scores_entries(sh: Shapes, stack: str, s: Any) -> Any:
    """Materialized score entries per head of a full self-attention pass (rectangle)."""
    st = sh.stack(stack)
    return attention_pairs(st.pattern, st.window, False, s, "full")


def attention_saved(spec: ModelSpec, sh: Shapes, b: Any, s: Any, s_k: Any,
                    entries: Any, masked: bool, s_pad: Any = None,
                    fused_mask: bool = False, window: int | None = None,
                    cross: bool = False) -> Terms:  # fmt: skip
    """Saved bytes of one attention block: s queries, s_k keys, ``entries`` scores per head;
    ``masked``: the pattern's bool mask (~ok, a new [s, s_k] per call) is saved by masked_fill;
    ``fused_mask``: sdpa gets an additive mask (a pattern other than plain causal / full);
    ``s_pad``: positions of Q, K, V as the eager matmuls see them (chunked: padded to whole
    chunks by F.pad, a copy that the matmuls save; default s, resp. s_k); ``window``: the
    pattern's window (sliding window, chunk), if any; ``cross``: a cross-attention (keys from
    the encoder output)."""
    cb, d, h, h_kv, d_h = sh.ib, spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim
    drop = sh.dropout > 0
    q, kv = h * d_h, h_kv * d_h
    t: Terms = {"q_proj": linear_saved(spec, sh, b * s, d, q, True)}  # input [b*s, d]
    t["k_proj"] = linear_saved(spec, sh, b * s_k, d, kv, True, False)  # q_proj's input
    t["v_proj"] = linear_saved(spec, sh, b * s_k, d, kv, True, False)
    o_proj = linear_saved(spec, sh, b * s, q, d, False, False)  # beyond its input
    t.update(rule("saved.qk_norm", spec, sh)(spec, sh, b * s, b * s_k))  # issue 22d: q/k_norm
    if sh.attention_impl == "fused" and s_pad is not None:
        # chunked blocks (5-D) run the math sdpa: softmax output, q * sqrt(scale) and
        # k^T * sqrt(scale) (k repeated to h heads under GQA), v (repeated) as [b,n_c,h,c,d_h]
        t["sdpa"] = b * h * entries * cb + 3 * b * h * s_pad * d_h * cb
        t["o_proj"] = b * s * h * d_h * cb + o_proj  # the blocks' transpose + reshape: a copy
    elif sh.attention_impl == "fused":
        saved = rule("saved.sdpa", spec, sh)(spec, sh, b, s, s_k, masked, fused_mask, window, cross)
        t.update(saved)
        t["o_proj"] += o_proj
    elif sh.checkpointing == "selective":  # Korthikanti et al. 2022 sec. 5: the core
        # (scores, mask, softmax, dropout, probs @ V) under torch.utils.checkpoint: only its
        # inputs q [b,h,s,d_h], k, v [b,h_kv,s_k,d_h] stay, held by the checkpoint inside
        # the attention module (measured under its name: ``checkpoint`` -> the attention's)
        t["checkpoint"] = (b * h * s * d_h + 2 * b * h_kv * s_k * d_h) * cb
        t["o_proj"] = b * s * h * d_h * cb + o_proj  # merged heads [b*s, h*d_h]
    else:
        probs = b * h * entries * cb  # [b,h,s,s_k]
        s_q, s_kv = (s, s_k) if s_pad is None else (s_pad, s_pad)
        # Q, K (repeated to h heads), V: what the eager matmuls save (rule saved.eager_qkv)
        qk, v = rule("saved.eager_qkv", spec, sh)(spec, sh, b, s_q, s_kv)
        t["scores"] = qk + probs + rule("saved.eager_mask", spec)(spec, sh, entries, masked)
        t["scores"] += rule("saved.eager_softmax", spec, sh)(spec, sh, b, entries)
        t["scores.dropout"] = mask_bytes(sh, b * h * entries) if drop else 0  # [b,h,s,s_k]
        t["mix"] = (probs if drop else 0) + v  # dropout output; V
        t["o_proj"] = b * s * h * d_h * cb + o_proj  # merged heads [b*s, h*d_h]: reshape copies
    return t


def ffn_saved(spec: ModelSpec, sh: Shapes, n: Any, fresh: bool = True) -> Terms:
    """Saved bytes of one FFN over n tokens (ffn.up's input included unless an earlier module
    saved that storage: ``fresh`` False)."""
    cb, d, d_ff = sh.ib, spec.d_model, spec.d_ff
    inner = n * d_ff * cb  # one [n, d_ff] tensor
    t: Terms = {"ffn.up": linear_saved(spec, sh, n, d, d_ff, True, fresh)}
    down = linear_saved(spec, sh, n, d_ff, d, False, False)  # beyond its input
    if spec.gated:  # act(gate(x)) * up(x): gate runs first and saves the norm output x
        t = {"ffn.gate": linear_saved(spec, sh, n, d, d_ff, True, fresh)}
        t["ffn.up"] = linear_saved(spec, sh, n, d, d_ff, True, False)
        t.update(rule("saved.ffn.gated", spec, sh)(spec, sh, n))  # ffn.act, ffn
        t["ffn.down"] = inner + down
    elif spec.activation == "relu":  # relu saves its output = down's input
        t.update({"ffn.act": inner, "ffn.down": down})
    else:
        t.update(
            {
                "ffn.act": rule("saved.ffn.act", spec, sh)(spec, sh, n),
                "ffn.down": inner + down,
            }
        )
    return t


def ffn_block_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Terms:
    """ffn_norm and the FFN over n tokens. A parallel block (reference_model/layers.py
    Layer.parallel_forward) norms the layer input x again: 'two_norms' -> ffn_norm's saved
    input is x, the storage attn_norm saved (LayerNorm keeps mean and rstd, RMSNorm rms and
    x * rms); 'one_norm' -> no ffn_norm, and the FFN's first linear reads attn_norm's output,
    which q_proj saved (a fresh input only where each linear saves its own cast: autocast)."""
    t: Terms = {}
    if spec.parallel_block == "none":
        t["ffn_norm"] = norm_saved(spec, sh, n)
        t.update(ffn_saved(spec, sh, n))
        return t
    if spec.parallel_block == "two_norms":
        t["ffn_norm"] = norm_saved(spec, sh, n) - n * spec.d_model * sh.cb
        t.update(ffn_saved(spec, sh, n))
        return t
    t.update(ffn_saved(spec, sh, n, fresh=False))
    return t


def layer_saved(spec: ModelSpec, sh: Shapes, stack: str, s: Any, s_src: Any,
                moe: bool = False) -> Terms:  # fmt: skip
    """Saved bytes of ONE layer of ``stack`` over s tokens, names relative to {stack}.layers;
    ``moe``: a mixture-of-experts layer (issue 22: its FFN is rule ``saved.ffn.moe``)."""
    b = sh.b
    n = b * s
    t: Terms = {"attn_norm": norm_saved(spec, sh, n)}
    entries = scores_entries(sh, stack, s)
    st = sh.stack(stack)
    pattern, window = st.pattern, st.window
    s_pad = ceil_div(s, window) * window if pattern == "chunked" else None  # whole chunks
    fused_mask = pattern not in ("full", "causal")
    if rule("attention.latent", spec)(spec):  # issue 22l: reference_model/mla.py
        saved = rule("saved.latent_attention", spec, sh)(spec, sh, b, s, entries, pattern != "full")
    else:
        saved = attention_saved(spec, sh, b, s, s, entries, pattern != "full", s_pad, fused_mask,
                                window)  # fmt: skip
    held = saved.pop("checkpoint", 0)  # selective: q, k, v, the attention's own
    for k, v in saved.items():
        t[f"self_attn.{k}"] = v
    sublayers = 2
    if s_src:
        sublayers = 3
        t["cross_norm"] = norm_saved(spec, sh, n)
        cross = attention_saved(spec, sh, b, s, s_src, s * s_src, False, cross=True)
        if "checkpoint" in cross:
            t["cross_attn"] = cross.pop("checkpoint")
        t.update({f"cross_attn.{k}": v for k, v in cross.items()})
    if moe:
        t["ffn_norm"] = norm_saved(spec, sh, n)
        t.update(rule("saved.ffn.moe", spec, sh)(spec, sh, n))
    else:
        t.update(ffn_block_saved(spec, sh, n))
    t["self_attn"] = rope_or_bias_saved(spec, sh, stack, s) + held
    if sh.dropout > 0:
        t["dropout"] = sublayers * mask_bytes(sh, n * spec.d_model)  # residual masks
    if sh.finetune.lora:  # issue 20: LoRA's own path per wrapped linear (rules/finetune.py)
        for name, d_in, d_out in lora_layer_targets(spec, sh.finetune, stack):
            n_in = (
                b * s_src
                if name.startswith("cross_attn.") and name[-6:] in ("k_proj", "v_proj")
                else n
            )
            for k, v in rule("saved.lora", spec, sh)(spec, sh, n_in, d_in, d_out, sh.ib).items():
                t[f"{name}.{k}"] = v
    return rule("saved.layer", spec, sh)(spec, sh, t, n)  # issue 22d: a class's own layer


def kind_layers_saved(spec: ModelSpec, sh: Shapes, s: Any, s_src: Any) -> Terms:
    """The decoder layers of a per-layer pattern (``spec.layer_pattern``, issue 22p): each
    kind's saved set (``for_layer_kind``: a sliding layer's window, a full layer's causal
    attention; fused, only the sliding layers hand sdpa an additive mask) times its layers."""
    from estimator.terms.kv_cache import layer_pattern_counts

    layer_pattern_counts(spec, sh.stack("decoder"))  # the workload's pattern is the model's
    t: Terms = {}
    for kind in ("sliding", "full"):
        copies = spec.layer_pattern.count(kind)
        one = layer_saved(spec, for_layer_kind(sh, kind), "decoder", s, s_src) if copies else {}
        for k, v in one.items():
            t[f"decoder.layers.{k}"] = t.get(f"decoder.layers.{k}", 0) + copies * v
    return t


def rope_or_bias_saved(spec: ModelSpec, sh: Shapes, stack: str, s: Any) -> Any:
    """Bytes one layer's self-attention saves for its rotary / relative positions. The
    ``{stack}.pos`` module is called from the attention, so its saves belong to the deeper
    ``{stack}.layers.self_attn`` (the innermost running module of the glossary)."""
    if spec.position == "rotary":
        return rule("saved.rotary.layer", spec)(spec, sh, s)
    if spec.position == "relative":
        return rule("saved.relative_bias", spec)(spec, sh, stack, s)[0]
    return 0


def stack_saved(spec: ModelSpec, sh: Shapes, stack: str, s: Any, s_src: Any) -> Terms:
    """All saved bytes of one stack, as full term names (per-layer terms times L)."""
    b, d, cb = sh.b, spec.d_model, sh.cb
    L, n = dict(spec.stacks)[stack], b * s
    t: Terms = {}
    if spec.is_patch_input:
        t[f"{stack}.patch.proj"] = b * spec.n_channels * spec.image_size**2 * cb  # pixels
    else:
        t["embed"] = n * INDEX_BYTES  # token ids [b, s]
    t[f"{stack}.pos"] = rule("saved.positions", spec)(spec, sh, stack, s)
    if spec.position == "relative" and sh.checkpointing != "full":
        t[f"{stack}.pos"] += rule("saved.relative_bias", spec)(spec, sh, stack, s)[1]
    if spec.n_token_types and stack == spec.stacks[0][0]:
        t[f"{stack}.token_type"] = rule("saved.token_type", spec)(spec, sh, s)
    if spec.embed_norm:
        t[f"{stack}.embed_norm"] = norm_saved(spec, sh, n)
    if sh.dropout > 0:
        t[f"{stack}.dropout"] = mask_bytes(sh, n * d)  # embedding dropout [b, s, d]
    if sh.checkpointing == "full":  # the Stack calls checkpoint(layer, x, ...)
        t[f"{stack}"] = L * n * d * cb  # each layer's input, kept by the checkpoint
        # issue 20c: other positional tensors (rules/hf/checkpoint.py: GPT-2's causal mask)
        t[f"{stack}"] += rule("saved.checkpoint_args", spec, sh)(spec, sh, s)
    elif sh.finetune.lora:  # issue 20: frozen base, layer 0 partly without grad
        steady, first = frozen_layers(spec, sh, stack, s, s_src)
        for k in steady.keys() | first.keys():
            t[f"{stack}.layers.{k}"] = (L - 1) * steady.get(k, 0) + first.get(k, 0)
    elif sh.finetune.kind == "freeze" and freeze_exact(spec, sh):  # issue 20: rules/freeze.py
        one = layer_saved(spec, sh, stack, s, s_src)
        frozen = frozen_flags(spec, sh)
        for k, v in rule("saved.freeze_layer", spec, sh)(spec, sh, one, stack, n, frozen).items():
            t[f"{stack}.layers.{k}"] = L * v
        if frozen_input_norm(spec, sh):  # layer 0's attn_norm: its input needs no gradient
            key = f"{stack}.layers.attn_norm"
            t[key] += rule("saved.freeze_input_norm", spec, sh)(spec, sh, n) - t[key] // L
    elif spec.layer_pattern is not None and stack == "decoder":  # issue 22p: per layer kind
        t.update(kind_layers_saved(spec, sh, s, s_src))
    else:
        n_moe = moe_layers(spec) if stack == "decoder" else 0  # issue 22
        for moe, copies in ((False, L - n_moe), (True, n_moe)):
            for k, v in (layer_saved(spec, sh, stack, s, s_src, moe) if copies else {}).items():
                t[f"{stack}.layers.{k}"] = t.get(f"{stack}.layers.{k}", 0) + copies * v
    if sh.checkpointing != "full":
        if spec.position == "rotary":  # tables built once per stack, saved by its layers
            key = f"{stack}.layers.self_attn"
            t[key] = t.get(key, 0) + rule("saved.rotary.stack", spec)(spec, sh, s)
    if s_src:  # the encoder output, saved once by the first cross_attn.k_proj (or checkpoint)
        key = stack if sh.checkpointing == "full" else f"{stack}.layers.cross_attn.k_proj"
        t[key] = t.get(key, 0) + b * s_src * d * cb
        if sh.checkpointing != "full" and sh.attention_impl == "fused":
            once = rule("saved.cross_mask", spec)(spec, sh, s, s_src)
            t[f"{stack}.layers.cross_attn.sdpa"] += once
    if spec.final_norm:
        t[f"{stack}.final_norm"] = norm_saved(spec, sh, n)
    return t


def frozen_layers(spec: ModelSpec, sh: Shapes, stack: str, s: Any, s_src: Any) -> tuple:
    """(a layer's saved set, layer 0's) when only LoRA adapters train (rule
    ``saved.frozen_layer``, estimator/rules/finetune.py)."""
    one = layer_saved(spec, sh, stack, s, s_src)
    frozen = rule("saved.frozen_layer", spec, sh)
    n = sh.b * s
    return frozen(spec, sh, one, n, False), frozen(spec, sh, one, n, True)


def head_saved(spec: ModelSpec, sh: Shapes, s: Any) -> Terms:
    """Pooler, LM head and loss over the last stack's s positions."""
    b, d, cb = sh.b, spec.d_model, sh.cb
    n = b * s
    t: Terms = {}
    if spec.pooler:
        t["pooler.proj"] = n * d * cb  # x[:, 0] is a view: its whole storage
        t["pooler.act"] = b * d * cb  # nn.Tanh saves its output [b, d]
    if spec.head_transform:  # norm(act(dense(x))) (modeling_bert.BertPredictionHeadTransform)
        t["head_transform.dense"] = n * d * cb  # its input
        # what the activation saves over [n, d] (rule saved.ffn.act: ACT2FN[hidden_act]'s
        # tensors); relu saves its output, the norm's input: counted once, with the act
        t["head_transform.act"] = rule("saved.ffn.act", spec, sh)(spec, sh, n, d)
        shared = n * d * cb if spec.activation == "relu" else 0
        t["head_transform.norm"] = norm_saved(spec, sh, n) - shared
    if spec.lm_head:
        t["lm_head"] = linear_saved(spec, sh, n, d, spec.vocab_size, True)
        t["loss"] = rule("saved.loss", spec, sh)(spec, sh, n)  # log-softmax, targets, weight
        t["final_softcap"] = rule("saved.final_softcap", spec, sh)(spec, sh, n)  # issue 22p
    if spec.n_labels:
        t.update(classifier_saved(spec, sh, n))
    if not (spec.lm_head or spec.n_labels) and cb != FP32_BYTES:
        # a base model's stand-in objective (reference_model.train.objective,
        # tgauge/hf_models.stand_in_loss): out.float().pow(2).mean(), pow saving the fp32 copy
        # of the pooled [b, d] (else the last hidden [b, s, d]) output of a low model dtype
        t["loss"] = (b if spec.pooler else n) * d * FP32_BYTES
    return t


def classifier_saved(spec: ModelSpec, sh: Shapes, n: Any) -> Terms:
    """The classifier on the pooled output (after a dropout; tanh already saved its output,
    and a dropout of p = 0 returns its input) or on x[:, 0] (a view: the whole [n, d] storage
    of the last stack's output), and cross-entropy over [b, n_labels]."""
    b, d, cb = sh.b, spec.d_model, sh.cb
    t: Terms = {}
    if not spec.pooler:
        t["classifier"] = n * d * cb
    elif sh.dropout > 0:
        t["classifier.dropout"] = mask_bytes(sh, b * d)  # mask [b, d]
        t["classifier"] = b * d * cb  # the dropout output
    t["loss"] = b * spec.n_labels * cb + b * INDEX_BYTES + cb  # log-softmax, targets, weight
    return t


def activations(spec: ModelSpec, sh: Shapes) -> Terms:
    """activation terms of one training step (full names, without the 'activations.' prefix)."""
    s, s_dec = sh.s, sh.s_dec
    parts: list[Terms] = []
    if spec.arch == "encoder":
        parts += [stack_saved(spec, sh, "encoder", s, 0), head_saved(spec, sh, s)]
    else:
        s_src = sh.s_src
        if s_src:
            parts.append(stack_saved(spec, sh, "encoder", s, 0))
        parts += [stack_saved(spec, sh, "decoder", s_dec, s_src),
                  head_saved(spec, sh, s_dec)]  # fmt: skip
    out: Terms = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    if sh.finetune.lora:  # issue 20: frozen embeddings, final norm, head (rules/finetune.py)
        out = rule("saved.frozen_stack", spec, sh)(spec, sh, out, "decoder", sh.b * s_dec)
    if sh.finetune.kind == "freeze" and freeze_exact(spec, sh):  # issue 20: rules/freeze.py
        frozen, n = frozen_flags(spec, sh), sh.b * s_dec
        out = rule("saved.freeze_stack", spec, sh)(spec, sh, out, "decoder", n, frozen)
    return {k: v for k, v in out.items() if v}
