"""Memory of one step, per named term (bytes), and the peak of a stated timeline.

Terms (docs/formulas.md):
  weights                    every parameter tensor in ``dtype``: ceil(numel * bits / 8)
                             (int4 packs 2 per byte; norms and embeddings included)
  gradients                  train: one gradient per parameter, in the weight dtype
  optimizer.exp_avg, .exp_avg_sq   adam/adamw; optimizer.momentum_buffer  sgd-momentum
                             fp32 under master_weights, else the weight dtype
  optimizer.step             adam/adamw: one fp32 0-dim ``step`` per parameter tensor (torch)
  optimizer.master_weights   mixed precision: fp32 copy of every parameter
  activations.<module>       train: tensors saved for backward (estimator/activations.py)
  kv_cache.self, kv_cache.cross    prefill / decode with a cache (estimator/kv_cache.py)

Peak timeline. Training, steady state (optimizer states exist; grads set to None before the
forward; the logits [n, V] stay alive until the loss backward):
  forward_end    = weights + master + optimizer + activations + logits
  backward       = forward_end + grad of the log-probs and of the logits (2 x logits bytes;
                   the start of backward, before activations are freed) + one layer's saved
                   set under checkpointing (its recompute)
  optimizer_step = weights + master + optimizer + gradients (single-tensor AdamW: no extra
                   foreach buffers; activations already freed)
Inference: weights + KV cache + the largest transient of one pass: the logits [b, s_q, V],
eager scores + probabilities 2 x [b, h, s_q, s_k], or the FFN inner tensors (3 [n, d_ff]
gated, 2 otherwise); prefill over the prompt, decode at the longest cache. Norm statistics,
the residual stream and allocator fragmentation are not modelled.
"""

from __future__ import annotations

import functools

from estimator.activations import activations, one_layer_bytes, scores_entries
from estimator.breakdown import Breakdown
from estimator.dtypes import bits, nbytes
from estimator.kv_cache import (
    cached_positions,
    decoder_len,
    kv_cache,
    kv_cache_at,
    kv_cache_max_bytes,
)
from estimator.params import n_param_tensors, param_tensor_numels
from estimator.spec import ModelSpec, Workload, resolved_pattern, resolved_prompt_len

FP32_BYTES = 4


@functools.lru_cache(maxsize=256)  # depends on the spec only; hot in sweeps
def _bytes_of_params(spec: ModelSpec, dtype: str) -> int:
    return sum(nbytes(numel, dtype) for numel in param_tensor_numels(spec))


def _state_terms(spec: ModelSpec, workload: Workload) -> dict[str, int]:
    """weights, gradients and optimizer states."""
    t = {"weights": _bytes_of_params(spec, workload.dtype)}
    if not workload.is_training:
        return t
    t["gradients"] = _bytes_of_params(spec, workload.dtype)
    state_dtype = "fp32" if workload.master_weights else workload.dtype
    one_state = _bytes_of_params(spec, state_dtype)
    if workload.optimizer in ("adam", "adamw"):
        t["optimizer.exp_avg"] = one_state
        t["optimizer.exp_avg_sq"] = one_state
        t["optimizer.step"] = FP32_BYTES * n_param_tensors(spec)
    elif workload.optimizer == "sgd-momentum":
        t["optimizer.momentum_buffer"] = one_state
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


def _pass_transient(spec: ModelSpec, workload: Workload, s_q: int, entries: int) -> int:
    """Largest short-lived tensor(s) of one inference pass of s_q query tokens."""
    b, cb = workload.batch_size, _cb(workload)
    cands = [_logits_bytes(spec, workload, b * s_q)]
    cands.append((3 if spec.gated else 2) * b * s_q * spec.d_ff * cb)
    if workload.attention_impl == "eager":
        cands.append(2 * b * spec.n_heads * entries * cb)  # scores, probabilities
    if spec.arch == "encoder-decoder" and workload.attention_impl == "eager":
        cands.append(2 * b * spec.n_heads * s_q * workload.seq_len * cb)  # cross scores
    return max(cands)


def _train_peak(spec: ModelSpec, workload: Workload, mem: Breakdown) -> tuple[int, str]:
    s_dec = decoder_len(spec, workload)
    n_out = workload.batch_size * (s_dec if spec.arch != "encoder" else workload.seq_len)
    logits = _logits_bytes(spec, workload, n_out)
    states = mem.group("weights") + mem.group("optimizer")
    fwd_end = states + mem.group("activations") + logits
    recompute = one_layer_bytes(spec, workload, s_dec) if workload.checkpointing == "full" else 0
    backward = fwd_end + 2 * logits + recompute
    step = states + mem.group("gradients")
    phases = [(fwd_end, "forward_end"), (backward, "backward"), (step, "optimizer_step")]
    return max(phases, key=lambda p: p[0])


def _inference_peak(spec: ModelSpec, workload: Workload, mem: Breakdown) -> tuple[int, str]:
    w = mem.group("weights")
    stack = "encoder" if spec.arch == "encoder" else "decoder"
    if workload.mode == "prefill":
        s = decoder_len(spec, workload) if stack == "decoder" else workload.seq_len
        entries = scores_entries(spec, workload, stack, s)
        return w + mem.group("kv_cache") + _pass_transient(spec, workload, s, entries), "prefill"
    p = resolved_prompt_len(spec, workload)
    prefill = (
        w
        + kv_cache_at(spec, workload, 0).total
        + _pass_transient(spec, workload, p, scores_entries(spec, workload, "decoder", p))
    )
    last = p + workload.new_tokens
    if workload.kv_cache:
        pattern, window = resolved_pattern(spec, workload, "decoder")
        t_max = cached_positions(pattern, window, last) if pattern != "chunked" else window
        decode = (
            w
            + kv_cache_max_bytes(spec, workload)
            + _pass_transient(spec, workload, 1, min(t_max, last))
        )
    else:  # each step re-runs the prefix; the last one is the longest
        decode = w + _pass_transient(
            spec, workload, last, scores_entries(spec, workload, "decoder", last)
        )
    return (decode, "decode") if decode > prefill else (prefill, "prefill")


def peak_memory(spec: ModelSpec, workload: Workload) -> tuple[int, str]:
    """(peak bytes, phase) of the timeline in the module docstring."""
    mem = memory(spec, workload)
    if workload.is_training:
        return _train_peak(spec, workload, mem)
    return _inference_peak(spec, workload, mem)
