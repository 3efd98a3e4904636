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
Under torch.autocast (``workload.autocast``, estimator/autocast.py): what matmuls make is in
the autocast dtype (``_ib``), the norms and the loss stay fp32 (cb), and every linear saves
its own low cast of an fp32 input and its weight's low copy (rule ``saved.linear@autocast``).
"""

from __future__ import annotations

from estimator.dtypes import INDEX_BYTES, bits
from estimator.flops import attention_pairs
from estimator.implementations import register, rule
from estimator.spec import ModelSpec, Workload, resolved_pattern

Terms = dict[str, int]
FP32_BYTES = 4


def _cb(workload: Workload) -> int:
    return bits(workload.compute_dtype) // 8


def _ib(workload: Workload) -> int:
    """Bytes per element of what the matmuls make (q, k, v, scores, probabilities, the FFN's
    inner tensors, rotary tables): the autocast dtype under autocast, else the compute dtype."""
    return bits(workload.autocast or workload.compute_dtype) // 8


def linear_saved(spec: ModelSpec, workload: Workload, n: int, d_in: int, d_out: int,
                 stream: bool, fresh: bool = True) -> int:  # fmt: skip
    """Bytes one nn.Linear over n tokens saves beyond what earlier modules saved: rule
    ``saved.linear`` (estimator/autocast.py has its autocast variant). ``stream``: its input
    is a norm output or the residual stream (not a matmul's output); ``fresh``: no earlier
    module saved that input (k_proj and v_proj share q_proj's)."""
    return rule("saved.linear", spec, workload)(spec, workload, n, d_in, d_out, stream, fresh)


@register("saved.linear", "reference")
def plain_linear_saved(spec: ModelSpec, workload: Workload, n: int, d_in: int, d_out: int,
                       stream: bool, fresh: bool) -> int:  # fmt: skip
    """AddmmBackward0 / MmBackward0 keep the input [n, d_in] (torch.nn.functional.linear)
    and the weight, a parameter (not an activation): the input when it is a new storage."""
    return n * d_in * _cb(workload) if fresh else 0


def mask_bytes(workload: Workload, numel: int) -> int:
    """A dropout mask of ``numel`` entries: native_dropout keeps it as bool on CUDA (1 byte)
    and in the compute dtype on CPU (the CPU kernel multiplies by a float mask)."""
    return numel if workload.device == "cuda" else numel * _cb(workload)


def norm_saved(spec: ModelSpec, workload: Workload, n: int) -> int:
    """Bytes a norm over [n, d] saves: its input plus its statistics. LayerNorm's mean and
    rstd are fp32 on CUDA (the kernel's accumulate type) and in the input's dtype on CPU
    (measured: pure bf16 training saves them in bf16)."""
    cb, d = _cb(workload), spec.d_model
    if spec.norm == "layernorm":
        stat = FP32_BYTES if workload.device == "cuda" else cb
        return n * d * cb + 2 * n * stat  # input; mean, rstd
    return 2 * n * d * cb + n * cb  # input (pow), x*rms (mul by weight); rms [n,1] (rsqrt)


def scores_entries(spec: ModelSpec, workload: Workload, stack: str, s: int) -> int:
    """Materialized score entries per head of a full self-attention pass (rectangle)."""
    pattern, window = resolved_pattern(spec, workload, stack)
    return attention_pairs(pattern, window, False, s, "full")


def attention_saved(spec: ModelSpec, workload: Workload, b: int, s: int, s_k: int,
                    entries: int, masked: bool, s_pad: int | None = None,
                    fused_mask: bool = False, window: int | None = None,
                    cross: bool = False) -> Terms:  # fmt: skip
    """Saved bytes of one attention block: s queries, s_k keys, ``entries`` scores per head;
    ``masked``: the pattern's bool mask (~ok, a new [s, s_k] per call) is saved by masked_fill;
    ``fused_mask``: sdpa gets an additive mask (a pattern other than plain causal / full);
    ``s_pad``: positions of Q, K, V as the eager matmuls see them (chunked: padded to whole
    chunks by F.pad, a copy that the matmuls save; default s, resp. s_k); ``window``: the
    pattern's window (sliding window, chunk), if any; ``cross``: a cross-attention (keys from
    the encoder output)."""
    cb, d, h, h_kv, d_h = _ib(workload), spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim
    drop = workload.dropout > 0
    q, kv = h * d_h, h_kv * d_h
    t: Terms = {"q_proj": linear_saved(spec, workload, b * s, d, q, True)}  # input [b*s, d]
    t["k_proj"] = linear_saved(spec, workload, b * s_k, d, kv, True, False)  # q_proj's input
    t["v_proj"] = linear_saved(spec, workload, b * s_k, d, kv, True, False)
    o_proj = linear_saved(spec, workload, b * s, q, d, False, False)  # beyond its input
    if workload.attention_impl == "fused" and s_pad is not None:
        # chunked blocks (5-D) run the math sdpa: softmax output, q * sqrt(scale) and
        # k^T * sqrt(scale) (k repeated to h heads under GQA), v (repeated) as [b,n_c,h,c,d_h]
        t["sdpa"] = b * h * entries * cb + 3 * b * h * s_pad * d_h * cb
        t["o_proj"] = b * s * h * d_h * cb + o_proj  # the blocks' transpose + reshape: a copy
    elif workload.attention_impl == "fused":
        saved = rule("saved.sdpa", spec, workload)(
            spec, workload, b, s, s_k, masked, fused_mask, window, cross
        )
        t.update(saved)
        t["o_proj"] += o_proj
    else:
        probs = b * h * entries * cb  # [b,h,s,s_k]
        s_q, s_kv = (s, s_k) if s_pad is None else (s_pad, s_pad)
        qk = (b * h * s_q * d_h + b * h * s_kv * d_h) * cb  # Q, K (repeated to h heads)
        t["scores"] = qk + probs + rule("saved.eager_mask", spec)(spec, workload, entries, masked)
        t["scores"] += rule("saved.eager_softmax", spec, workload)(spec, workload, b, entries)
        t["scores.dropout"] = mask_bytes(workload, b * h * entries) if drop else 0  # [b,h,s,s_k]
        t["mix"] = (probs if drop else 0) + b * h * s_kv * d_h * cb  # dropout output; V
        t["o_proj"] = b * s * h * d_h * cb + o_proj  # merged heads [b*s, h*d_h]: reshape copies
    return t


@register("saved.sdpa", "reference")
def sdpa_saved(spec: ModelSpec, workload: Workload, b: int, s: int, s_k: int, masked: bool,
               fused_mask: bool, window: int | None, cross: bool) -> Terms:  # fmt: skip
    """Bytes fused (CPU flash) attention saves per call (term "sdpa") and what its output
    adds to o_proj's saved input (term "o_proj"): q [b,h,s,d_h], k, v [b,h_kv,s_k,d_h],
    out, logsumexp [b,h,s] fp32; ``fused_mask``: its additive attn_mask where(ok, 0, min)
    [s, s_k] (reference_model/attention.py). The flash/efficient kernels return out as a
    [b,h,s,d_h] view of a [b,s,h,d_h] buffer: o_proj's input (heads merged) is a view of
    the storage sdpa already saved (0)."""
    cb, h, h_kv, d_h = _ib(workload), spec.n_heads, spec.n_kv_heads, spec.head_dim
    out = (2 * b * s * h * d_h + 2 * b * s_k * h_kv * d_h) * cb + b * h * s * FP32_BYTES
    return {"sdpa": out + (s * s_k * cb if fused_mask else 0), "o_proj": 0}


@register("saved.ffn.act", "reference")
def ffn_act_saved(spec: ModelSpec, workload: Workload, n: int) -> int:
    """Bytes a GELU (nn.GELU) saves over n tokens: its input [n, d_ff]."""
    return n * spec.d_ff * _ib(workload)


@register("saved.rotary.layer", "reference")
def rotary_layer_saved(spec: ModelSpec, workload: Workload, s: int) -> int:
    """Bytes one layer's rotary products save: x * cos, rot(x) * sin keep cos and sin
    [s, d_h], built per call (reference_model/positions.py), for q and for k."""
    return 2 * 2 * s * spec.head_dim * _ib(workload)  # cast to q's dtype


@register("saved.rotary.stack", "reference")
def rotary_stack_saved(spec: ModelSpec, workload: Workload, s: int) -> int:
    """Bytes of rotary tables built once per stack and saved (reference: none, per layer)."""
    return 0


@register("saved.eager_softmax", "reference")
def eager_softmax_saved(spec: ModelSpec, workload: Workload, b: int, entries: int) -> int:
    """Bytes eager attention's softmax saves beyond the probabilities (``entries`` per head
    and sequence): none, softmax saves its output, the probabilities probs @ v saves."""
    return 0


@register("saved.eager_mask", "reference")
def eager_mask_saved(spec: ModelSpec, workload: Workload, entries: int, masked: bool) -> int:
    """Bytes eager attention's mask saves per call: masked_fill(~ok) keeps the bool [s, s_k]
    it builds (reference_model/attention.py), ``entries`` of them; none when unmasked."""
    return entries if masked else 0


def ffn_saved(spec: ModelSpec, workload: Workload, n: int) -> Terms:
    """Saved bytes of one FFN over n tokens (ffn.up's input included)."""
    cb, d, d_ff = _ib(workload), spec.d_model, spec.d_ff
    inner = n * d_ff * cb  # one [n, d_ff] tensor
    t: Terms = {"ffn.up": linear_saved(spec, workload, n, d, d_ff, True)}
    down = linear_saved(spec, workload, n, d_ff, d, False, False)  # beyond its input
    if spec.gated:  # act(gate(x)) * up(x): gate runs first and saves the norm output x
        t = {"ffn.gate": linear_saved(spec, workload, n, d, d_ff, True)}
        t["ffn.up"] = linear_saved(spec, workload, n, d, d_ff, True, False)
        t.update({"ffn.act": inner, "ffn": 2 * inner, "ffn.down": inner + down})
    elif spec.activation == "relu":  # relu saves its output = down's input
        t.update({"ffn.act": inner, "ffn.down": down})
    else:
        t.update(
            {
                "ffn.act": rule("saved.ffn.act", spec, workload)(spec, workload, n),
                "ffn.down": inner + down,
            }
        )
    return t


def layer_saved(spec: ModelSpec, workload: Workload, stack: str, s: int, s_src: int) -> Terms:
    """Saved bytes of ONE layer of ``stack`` over s tokens, names relative to {stack}.layers."""
    b = workload.batch_size
    n = b * s
    t: Terms = {"attn_norm": norm_saved(spec, workload, n)}
    entries = scores_entries(spec, workload, stack, s)
    pattern, window = resolved_pattern(spec, workload, stack)
    s_pad = -(-s // window) * window if pattern == "chunked" else None  # whole chunks
    fused_mask = pattern not in ("full", "causal")
    saved = attention_saved(spec, workload, b, s, s, entries, pattern != "full", s_pad, fused_mask,
                            window)  # fmt: skip
    for k, v in saved.items():
        t[f"self_attn.{k}"] = v
    sublayers = 2
    if s_src:
        sublayers = 3
        t["cross_norm"] = norm_saved(spec, workload, n)
        cross = attention_saved(spec, workload, b, s, s_src, s * s_src, False, cross=True)
        t.update({f"cross_attn.{k}": v for k, v in cross.items()})
    t["ffn_norm"] = norm_saved(spec, workload, n)
    t.update(ffn_saved(spec, workload, n))
    t["self_attn"] = rope_or_bias_saved(spec, workload, stack, s)
    if workload.dropout > 0:
        t["dropout"] = sublayers * mask_bytes(workload, n * spec.d_model)  # residual masks
    return t


def rope_or_bias_saved(spec: ModelSpec, workload: Workload, stack: str, s: int) -> int:
    """Bytes one layer's self-attention saves for its rotary / relative positions. The
    ``{stack}.pos`` module is called from the attention, so its saves belong to the deeper
    ``{stack}.layers.self_attn`` (the innermost running module of the glossary)."""
    if spec.position == "rotary":
        return rule("saved.rotary.layer", spec)(spec, workload, s)
    if spec.position == "relative":
        return rule("saved.relative_bias", spec)(spec, workload, stack, s)[0]
    return 0


@register("saved.relative_bias", "reference")
def relative_bias_saved(spec: ModelSpec, workload: Workload, stack: str, s: int) -> tuple[int, int]:
    """(bytes per layer, under {stack}.layers.self_attn; bytes once, under {stack}.pos) the
    relative position bias saves: every layer's embedding(buckets) keeps the bucket ids."""
    pattern, window = resolved_pattern(spec, workload, stack)
    side = window if pattern == "chunked" else s  # chunked: one [c, c] bias for all blocks
    return side * side * INDEX_BYTES, 0


@register("saved.token_type", "reference")
def token_type_saved(spec: ModelSpec, workload: Workload, s: int) -> int:
    """Bytes the segment embedding saves: its ids [b, s] int64 (an input)."""
    return workload.batch_size * s * INDEX_BYTES


@register("saved.cross_mask", "reference")
def cross_mask_saved(spec: ModelSpec, workload: Workload, s: int, s_src: int) -> int:
    """Bytes the cross-attentions of a stack save once between them (reference: none)."""
    return 0


@register("saved.positions", "reference")
def positions_saved(spec: ModelSpec, workload: Workload, stack: str, s: int) -> int:
    """Bytes the stack's positional module saves when the stack calls it (learned only)."""
    if spec.position == "learned":
        return s * INDEX_BYTES  # position ids [s] (+ offset: a new tensor)
    return 0  # sinusoidal: a buffer lookup; rotary / relative: see rope_or_bias_saved


def stack_saved(spec: ModelSpec, workload: Workload, stack: str, s: int, s_src: int) -> Terms:
    """All saved bytes of one stack, as full term names (per-layer terms times L)."""
    b, d, cb = workload.batch_size, spec.d_model, _cb(workload)
    L, n = dict(spec.stacks)[stack], b * s
    t: Terms = {}
    if spec.is_patch_input:
        t[f"{stack}.patch.proj"] = b * spec.n_channels * spec.image_size**2 * cb  # pixels
    else:
        t["embed"] = n * INDEX_BYTES  # token ids [b, s]
    t[f"{stack}.pos"] = rule("saved.positions", spec)(spec, workload, stack, s)
    if spec.position == "relative" and workload.checkpointing != "full":
        t[f"{stack}.pos"] += rule("saved.relative_bias", spec)(spec, workload, stack, s)[1]
    if spec.n_token_types and stack == spec.stacks[0][0]:
        t[f"{stack}.token_type"] = rule("saved.token_type", spec)(spec, workload, s)
    if spec.embed_norm:
        t[f"{stack}.embed_norm"] = norm_saved(spec, workload, n)
    if workload.dropout > 0:
        t[f"{stack}.dropout"] = mask_bytes(workload, n * d)  # embedding dropout [b, s, d]
    if workload.checkpointing == "full":  # the Stack calls checkpoint(layer, x, ...)
        t[f"{stack}"] = L * n * d * cb  # each layer's input, kept by the checkpoint
    else:
        for k, v in layer_saved(spec, workload, stack, s, s_src).items():
            t[f"{stack}.layers.{k}"] = L * v
        if spec.position == "rotary":  # tables built once per stack, saved by its layers
            t[f"{stack}.layers.self_attn"] += rule("saved.rotary.stack", spec)(spec, workload, s)
    if s_src:  # the encoder output, saved once by the first cross_attn.k_proj (or checkpoint)
        key = stack if workload.checkpointing == "full" else f"{stack}.layers.cross_attn.k_proj"
        t[key] = t.get(key, 0) + b * s_src * d * cb
        if workload.checkpointing != "full" and workload.attention_impl == "fused":
            once = rule("saved.cross_mask", spec)(spec, workload, s, s_src)
            t[f"{stack}.layers.cross_attn.sdpa"] += once
    if spec.final_norm:
        t[f"{stack}.final_norm"] = norm_saved(spec, workload, n)
    return t


def head_saved(spec: ModelSpec, workload: Workload, s: int) -> Terms:
    """Pooler, LM head and loss over the last stack's s positions."""
    b, d, cb = workload.batch_size, spec.d_model, _cb(workload)
    n = b * s
    t: Terms = {}
    if spec.pooler:
        t["pooler.proj"] = n * d * cb  # x[:, 0] is a view: its whole storage
        t["pooler.act"] = b * d * cb  # nn.Tanh saves its output [b, d]
    if spec.head_transform:  # dense saves its input, gelu its input, the norm its own set
        t["head_transform.dense"] = n * d * cb
        t["head_transform.act"] = n * d * cb
        t["head_transform.norm"] = norm_saved(spec, workload, n)
    if spec.lm_head:
        t["lm_head"] = linear_saved(spec, workload, n, d, spec.vocab_size, True)
        t["loss"] = n * spec.vocab_size * cb + n * INDEX_BYTES + cb  # log-softmax, targets, weight
    if spec.n_labels:
        t.update(classifier_saved(spec, workload, n))
    return t


def classifier_saved(spec: ModelSpec, workload: Workload, n: int) -> Terms:
    """The classifier on the pooled output (after a dropout; tanh already saved its output,
    and a dropout of p = 0 returns its input) or on x[:, 0] (a view: the whole [n, d] storage
    of the last stack's output), and cross-entropy over [b, n_labels]."""
    b, d, cb = workload.batch_size, spec.d_model, _cb(workload)
    t: Terms = {}
    if not spec.pooler:
        t["classifier"] = n * d * cb
    elif workload.dropout > 0:
        t["classifier.dropout"] = mask_bytes(workload, b * d)  # mask [b, d]
        t["classifier"] = b * d * cb  # the dropout output
    t["loss"] = b * spec.n_labels * cb + b * INDEX_BYTES + cb  # log-softmax, targets, weight
    return t


def activations(spec: ModelSpec, workload: Workload, s_dec: int) -> Terms:
    """activation terms of one training step (full names, without the 'activations.' prefix)."""
    s = workload.seq_len
    parts: list[Terms] = []
    if spec.arch == "encoder":
        parts += [stack_saved(spec, workload, "encoder", s, 0), head_saved(spec, workload, s)]
    else:
        s_src = s if spec.arch == "encoder-decoder" else 0
        if s_src:
            parts.append(stack_saved(spec, workload, "encoder", s, 0))
        parts += [stack_saved(spec, workload, "decoder", s_dec, s_src),
                  head_saved(spec, workload, s_dec)]  # fmt: skip
    out: Terms = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}
