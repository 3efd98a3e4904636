"""Memory of one step, per named term (bytes), and the peak of a stated timeline.

Terms (docs/formulas.md):
  weights                    every parameter tensor in ``dtype``: ceil(numel * bits / 8)
                             (int4 packs 2 per byte; norms and embeddings included)
  gradients                  train: one gradient per parameter, in the weight dtype
  optimizer.<state>          per optimizer (estimator/optimizers.py): exp_avg, exp_avg_sq,
                             step (adam/adamw); momentum_buffer (sgd-momentum); row_var,
                             col_var, variance, step (adafactor); state1, state2, absmax1/2,
                             qmap1/2 (adamw-8bit); fp32 under master_weights, else the weight dtype
  optimizer.master_weights   mixed precision: fp32 copy of every parameter
  activations.<module>       train: tensors saved for backward (estimator/activations.py)
  kv_cache.self, kv_cache.cross    prefill / decode with a cache (estimator/kv_cache.py)

Peak timeline. Training, steady state (optimizer states exist; grads set to None before the
forward; the step's inputs live throughout; the model output is dropped before backward):
  forward        = weights + master + optimizer + inputs + activations + logits (at the loss)
  backward       = max of its start, (forward - logits) + d(log-probs) + d(logits) [n, V],
                   and a module-by-module sweep (_backward_sweep): each module's parameter
                   gradients appear, then its saved tensors are freed; a checkpointed layer's
                   saved set is rebuilt when backward reaches it; the tied/shared embedding's
                   gradient waits in autograd's input buffer, and each further use adds a
                   [V, d] and their sum
  optimizer_step = weights + master + optimizer + inputs + gradients + the step's
                   temporaries of (optimizer, optimizer_impl) (estimator/optimizers.py:
                   foreach AdamW one more exp_avg_sq, for-loop max_t (n_{t-1} + 2 n_t), fused
                   none); activations already freed
Inference (no grad): weights + buffers (``buffers``: the sinusoidal tables) + inputs, then a
replay of the reference model's forward op by op (estimator/inference.py): every tensor it
returns, live until Python drops it (residual stream, norm outputs, q/k/v, masks, scores and
probabilities under eager, FFN intermediates, logits, the KV cache as it grows). Prefill: one
pass; decode: the prompt's prefill, then one-token steps with the whole cache (phase of the
larger). Allocator rounding, caching and kernel scratch are not modelled.
"""

from __future__ import annotations

import functools

from estimator.activations import activations
from estimator.breakdown import Breakdown
from estimator.dtypes import INDEX_BYTES, bits, nbytes
from estimator.kv_cache import (
    decoder_len,
    kv_cache,
)
from estimator.optimizers import state_terms as optimizer_states
from estimator.optimizers import step_temporaries_bytes
from estimator.params import param_tensor_numels, params
from estimator.spec import ModelSpec, Workload, resolved_prompt_len

FP32_BYTES = 4


@functools.lru_cache(maxsize=256)  # depends on the spec only; hot in sweeps
def _bytes_of_params(spec: ModelSpec, dtype: str) -> int:
    return sum(nbytes(numel, dtype) for numel in param_tensor_numels(spec))


def _state_terms(spec: ModelSpec, workload: Workload) -> dict[str, int]:
    """weights, gradients and optimizer states."""
    t = {"weights": _bytes_of_params(spec, workload.dtype)}
    if not workload.is_training:
        if buffers := buffer_bytes(spec, workload):
            t["buffers"] = buffers
        return t
    t["gradients"] = _bytes_of_params(spec, workload.dtype)
    t.update(optimizer_states(spec, workload))  # per optimizer (estimator/optimizers.py)
    if workload.master_weights:
        t["optimizer.master_weights"] = _bytes_of_params(spec, "fp32")
    return t


def memory(spec: ModelSpec, workload: Workload) -> Breakdown:
    """Bytes per term of one step (unit "bytes"); see the module docstring."""
    t = _state_terms(spec, workload)
    if workload.is_training:
        acts = activations(spec, workload, decoder_len(spec, workload))
        t.update({f"activations.{k}": v for k, v in acts.items()})
    cache = kv_cache(spec, workload).terms
    if "decoder.layers.self_attn" in cache:
        t["kv_cache.self"] = cache["decoder.layers.self_attn"]
    if "decoder.layers.cross_attn" in cache:
        t["kv_cache.cross"] = cache["decoder.layers.cross_attn"]
    return Breakdown(unit="bytes", terms=t)


def _cb(workload: Workload) -> int:
    return bits(workload.compute_dtype) // 8


def _logits_bytes(spec: ModelSpec, workload: Workload, n: int) -> int:
    return n * spec.vocab_size * _cb(workload) if spec.lm_head else 0


def input_bytes(spec: ModelSpec, workload: Workload) -> int:
    """The step's input tensors (reference_model.inputs.make_inputs), live all step long."""
    b, s = workload.batch_size, workload.seq_len
    if spec.is_patch_input:
        t = b * spec.n_channels * spec.image_size**2 * _cb(workload)  # pixel_values
    else:
        t = b * s * INDEX_BYTES  # input_ids [b, s]
    if spec.n_token_types:
        t += b * s * INDEX_BYTES  # token_type_ids [b, s]
    s_dec = decoder_len(spec, workload)
    if spec.arch == "encoder-decoder":
        t += b * s_dec * INDEX_BYTES  # decoder_input_ids [b, s_t]
    if workload.is_training and spec.lm_head:
        t += b * (s_dec if spec.arch != "encoder" else s) * INDEX_BYTES  # labels
    return t


_LAYER_ORDER = (  # modules of one layer in forward order (pre-norm), for the backward sweep
    "attn_norm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn",
    "self_attn.scores", "self_attn.scores.dropout", "self_attn.mix", "self_attn.sdpa",
    "self_attn.o_proj", "cross_norm", "cross_attn.q_proj", "cross_attn.k_proj",
    "cross_attn.v_proj", "cross_attn.scores", "cross_attn.scores.dropout", "cross_attn.mix",
    "cross_attn.sdpa", "cross_attn.o_proj", "ffn_norm", "ffn.gate", "ffn.up", "ffn.act", "ffn",
    "ffn.down", "dropout",
)  # fmt: skip


_POST_NORMS = (
    ("attn_norm", "self_attn.o_proj"),
    ("cross_norm", "cross_attn.o_proj"),
    ("ffn_norm", "ffn.down"),
)


@functools.lru_cache(maxsize=64)
def _backward_order(spec: ModelSpec) -> tuple[tuple[tuple[tuple[str, int], ...], int], ...]:
    """Segments ((term name, share), ...) x repeats, in the order backward visits them: the
    head, then per stack (last first) its final norm, its layers (last first, all alike: one
    segment repeated L times; ``share`` = L, a per-layer term's 1/L) module by module in
    reverse, then the stack's embeddings."""
    segments: list[tuple[tuple[tuple[str, int], ...], int]] = []
    head = [("pooler.act", 1), ("pooler.proj", 1), ("loss", 1), ("lm_head", 1)]
    head += [(f"head_transform.{m}", 1) for m in ("norm", "act", "dense")]
    for stack, n_layers in reversed(spec.stacks):
        head.append((f"{stack}.final_norm", 1))
        segments.append((tuple(head), 1))
        layer = list(_LAYER_ORDER)
        if spec.norm_position == "post":  # Norm(x + F(x)): each norm runs after its sublayer
            for norm, last in _POST_NORMS:
                layer.remove(norm)
                layer.insert(layer.index(last) + 1, norm)
        one_layer = [(f"{stack}.layers", n_layers)]  # checkpointing: the layer recomputes
        one_layer += [(f"{stack}.layers.{m}", n_layers) for m in reversed(layer)]
        one_layer.append((stack, n_layers))  # checkpointed layer input
        segments.append((tuple(one_layer), n_layers))
        head = [(f"{stack}.{m}", 1) for m in ("dropout", "embed_norm", "token_type", "pos")]
        head += [(f"{stack}.patch.proj", 1), (f"{stack}.patch", 1)]
        head.append(("embed", len(spec.stacks) if spec.arch == "encoder-decoder" else 1))
    segments.append((tuple(head), 1))
    return tuple(segments)


def _backward_sweep(spec: ModelSpec, workload: Workload, mem: Breakdown, start: int) -> int:
    """Highest live bytes while backward runs module by module (``_backward_order``) from
    ``start``, the live bytes at its start. At each module its parameters' gradients appear
    (and, under checkpointing, a layer's recomputed saved set is live while the layer runs),
    then its saved tensors are freed. The shared token embedding's gradient waits in
    autograd's input buffer from its first use in backward (the tied lm_head, or the last
    stack); each later use adds a [V, d] and their sum (a third [V, d]) before the buffer
    keeps the sum. One [n, d] gradient of the residual stream is live throughout; the
    transient gradients inside a module ([n, d_ff], [b, h, s, s_k]) are not counted.
    The L layers of a stack are alike: each changes the live bytes by the same amount, so the
    highest point is in the first layer visited (net freeing) or the last (net growing)."""
    acts = {k[len("activations.") :]: v for k, v in mem.terms.items() if k.startswith("act")}
    if workload.checkpointing == "full":  # a layer's saved set exists while it recomputes
        full = memory(spec, workload.model_copy(update={"checkpointing": "none"})).terms
        for k, v in full.items():
            if ".layers." in k:
                stack = k[len("activations.") :].split(".")[0]
                acts[k[len("activations.") :]] = v
                acts[f"{stack}.layers"] = acts.get(f"{stack}.layers", 0) - v  # recompute: +
    grad_of = {k: nbytes(v, workload.dtype) for k, v in params(spec).terms.items()}
    embed_grad = grad_of.pop("embed", 0)
    # the residual stream's gradient dL/dx [b, s, d] is carried from module to module
    n = workload.batch_size * decoder_len(spec, workload)
    live = start + n * spec.d_model * _cb(workload)
    peak, embed_uses = live, 0
    for segment, repeats in _backward_order(spec):
        top, delta = 0, 0  # highest point of one pass and its net change, relative to live
        for name, share in segment:
            grads, saved = grad_of.get(name, 0) // share, acts.get(name, 0) // share
            extra = 0
            is_embed_use = embed_grad and (
                (name == "lm_head" and spec.lm_head and spec.tie_embeddings) or name == "embed"
            )
            if is_embed_use:
                embed_uses += 1
                extra += embed_grad if embed_uses == 1 else 2 * embed_grad  # new [V, d] (+ sum)
            top = max(top, delta + grads + extra)
            delta += grads - saved + (embed_grad if is_embed_use and embed_uses == 1 else 0)
        peak = max(peak, live + max(0, (repeats - 1) * delta) + top)
        live += repeats * delta
    return peak


def _step_temporaries(spec: ModelSpec, workload: Workload, mem: Breakdown) -> int:
    """The optimizer step's temporaries (estimator/optimizers.py), scaled to the share of the
    optimizer states in ``mem`` when a plan shards them (ZeRO, tp: a rank steps its shard)."""
    temporaries = step_temporaries_bytes(spec, workload)
    full = sum(_state_terms(spec, workload)[k] for k in mem.terms if k.startswith("optimizer."))
    if temporaries and full and mem.group("optimizer") != full:
        return temporaries * mem.group("optimizer") // full
    return temporaries


def _train_peak(spec: ModelSpec, workload: Workload, mem: Breakdown) -> tuple[int, str]:
    s_dec = decoder_len(spec, workload)
    n_out = workload.batch_size * (s_dec if spec.arch != "encoder" else workload.seq_len)
    logits = _logits_bytes(spec, workload, n_out)
    states = mem.group("weights") + mem.group("optimizer") + input_bytes(spec, workload)
    grads = mem.group("gradients")
    # forward: at the loss, the logits and their log-softmax (an activation) are both live
    forward = states + mem.group("activations") + logits
    # backward start: the logits are freed with the model output; nll_loss_backward's
    # d(log-probs) and log_softmax_backward's d(logits) [n, V] are live, no activation freed yet
    start = states + mem.group("activations")
    backward = max(start + 2 * logits, _backward_sweep(spec, workload, mem, start))
    step = states + grads + _step_temporaries(spec, workload, mem)
    phases = [(forward, "forward"), (backward, "backward"), (step, "optimizer_step")]
    return max(phases, key=lambda p: p[0])


def buffer_bytes(spec: ModelSpec, workload: Workload) -> int:
    """The model's buffers: SinusoidalPositions' table [n, d] per stack (n = n_positions for
    patch inputs, else max_seq_len), cast to the weight dtype by build_model; rotary angles
    and relative buckets are computed per call (no buffer)."""
    if spec.position != "sinusoidal":
        return 0
    n = spec.n_positions if spec.is_patch_input else spec.max_seq_len
    dtype = workload.dtype if workload.dtype in ("fp32", "fp16", "bf16") else "fp32"
    return len(spec.stacks) * nbytes(n * spec.d_model, dtype)


def decode_input_bytes(spec: ModelSpec, workload: Workload) -> int:
    """Decode inputs: the prompt ids [b, P] (+ the source ids [b, s], encoder-decoder)."""
    b = workload.batch_size
    t = b * resolved_prompt_len(spec, workload) * INDEX_BYTES
    if spec.arch == "encoder-decoder":
        t += b * workload.seq_len * INDEX_BYTES
    return t


def _inference_peak(spec: ModelSpec, workload: Workload, mem: Breakdown) -> tuple[int, str]:
    """Replay of the reference model's no-grad forward (estimator/inference.py) from
    weights + buffers + inputs: a prefill, or a prompt prefill then one-token steps."""
    from estimator.inference import cached_prefill, decode_peaks, prefill_peak

    resident = mem.group("weights") + mem.group("buffers")
    if workload.mode == "prefill":
        start = resident + input_bytes(spec, workload)
        if workload.kv_cache and spec.arch != "encoder" and spec.lm_head:  # Transformer.prefill
            return cached_prefill(
                spec, workload, start, decoder_len(spec, workload)
            ).peak, "prefill"
        return prefill_peak(spec, workload, start), "prefill"
    if not workload.kv_cache:  # each step re-runs the whole prefix: the last one is longest
        last = resolved_prompt_len(spec, workload) + workload.new_tokens
        longest = workload.model_copy(update={"mode": "prefill", "seq_len": last})
        if spec.arch == "encoder-decoder":
            longest = workload.model_copy(update={"mode": "prefill", "target_len": last})
        start = resident + input_bytes(spec, longest)
        return prefill_peak(spec, longest, start), "decode"
    prefill, decode = decode_peaks(spec, workload, resident + decode_input_bytes(spec, workload))
    return (decode, "decode") if decode > prefill else (prefill, "prefill")


def peak_memory(spec: ModelSpec, workload: Workload) -> tuple[int, str]:
    """(peak bytes, phase) of the timeline in the module docstring."""
    mem = memory(spec, workload)
    if workload.is_training:
        return _train_peak(spec, workload, mem)
    return _inference_peak(spec, workload, mem)
