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
                   (under autocast: the low logits, their fp32 copy, the cast cache's bias
                   copies and the held fp32 head input, estimator/autocast.py)
  backward       = the highest point of a replay of autograd's backward from (forward -
                   logits), tensor by tensor (estimator/backward.py; per-module-kind rules in
                   estimator/backward_rules.py): d(log-probs) and d(logits) [n, V], each
                   module's parameter gradients and backward transients (grads of the
                   scores, softmax backward, norms, FFN, ...), its saved tensors freed; a
                   checkpointed layer's saved set is rebuilt when backward reaches it; the
                   tied/shared embedding's gradient waits in autograd's input buffer
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
from estimator.implementations import register, rule
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
        if buffers := rule("memory.buffers", spec)(spec, workload):
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
        t += rule("inputs.token_type", spec)(spec, workload)
    s_dec = decoder_len(spec, workload)
    if spec.arch == "encoder-decoder":
        t += b * s_dec * INDEX_BYTES  # decoder_input_ids [b, s_t]
    if workload.is_training and spec.lm_head:
        t += b * (s_dec if spec.arch != "encoder" else s) * INDEX_BYTES  # labels
    if workload.is_training and spec.n_labels:
        t += b * INDEX_BYTES  # labels [b]
    return t


@register("train.held", "reference")
def held_in_training(spec: ModelSpec, workload: Workload) -> int:
    """Bytes the forward keeps live at the loss besides the saved activations and the
    logits, freed with its output before backward (reference: none)."""
    return 0


@register("inputs.token_type", "reference")
def token_type_input_bytes(spec: ModelSpec, workload: Workload) -> int:
    """The token type ids the step passes in (reference_model.inputs: zeros [b, s])."""
    return workload.batch_size * workload.seq_len * INDEX_BYTES


def _backward_sweep(spec: ModelSpec, workload: Workload, mem: Breakdown, start: int) -> int:
    """Highest live bytes while backward runs, from ``start`` (every activation live): the
    replay of autograd's backward module by module in estimator/backward.py (parameter
    gradients, saved tensors freed, and each module's backward transients)."""
    from estimator.backward import backward_peak

    saved = {k[len("activations.") :]: v for k, v in mem.terms.items() if k.startswith("act")}
    grads = {k: nbytes(v, workload.dtype) for k, v in params(spec).terms.items()}
    return backward_peak(spec, workload, saved, grads, start, decoder_len(spec, workload))


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
    # while activations live, the ids the embeddings saved are the inputs' own storage
    with_acts = states - _saved_inputs(spec, workload, mem)
    # forward: at the loss, the logits and their log-softmax (an activation) are both live
    # + what the model's forward keeps live until it returns, saved by nothing (HF: its cache)
    held = rule("train.held", spec)(spec, workload)
    forward = with_acts + mem.group("activations") + logits + held
    if workload.autocast:  # the low logits, their fp32 copy, the cast cache's biases, ...
        moment = rule("live.autocast_loss", spec)(spec, workload, n_out)  # estimator/autocast.py
        forward = with_acts + mem.group("activations") + moment + held
    forward += rule("live.loss_moment", spec, workload)(spec, workload)  # what else it holds
    # or earlier, inside the last layer's attention: eager scores, or fused chunked attention's
    # math sdpa block scores + mask (estimator/train_forward.py)
    forward = max(forward, with_acts + held + _attention_moment(spec, workload, mem))
    # backward start: the logits are freed with the model output; nll_loss_backward's
    # d(log-probs) and log_softmax_backward's d(logits) [n, V] are live, no activation freed yet
    start = with_acts + mem.group("activations")
    backward = max(start + 2 * logits, _backward_sweep(spec, workload, mem, start))
    step = states + grads + _step_temporaries(spec, workload, mem)
    phases = [(forward, "forward"), (backward, "backward"), (step, "optimizer_step")]
    return max(phases, key=lambda p: p[0])


@register("live.loss_moment", "reference")
def loss_moment_extra(spec: ModelSpec, workload: Workload) -> int:
    """Bytes live at the loss beyond the states, the saved tensors and the logits: none
    (reference_model's loss reads the targets as given)."""
    return 0


def _saved_inputs(spec: ModelSpec, workload: Workload, mem: Breakdown) -> int:
    """Saved activations that are the step's input tensors themselves (one storage, already
    in ``input_bytes``): the token ids nn.Embedding saves (``embed``: input_ids, and
    decoder_input_ids for encoder-decoder), the token type ids (``{stack}.token_type``)
    when the step passes them in, and the pixel values the patch projection saves."""
    typed = spec.n_token_types and rule("inputs.token_type", spec)(spec, workload)
    return sum(
        v
        for k, v in mem.terms.items()
        if k in ("activations.embed", "activations.encoder.patch.proj")
        or (typed and k.startswith("activations.") and k.endswith(".token_type"))
    )


def _attention_moment(spec: ModelSpec, workload: Workload, mem: Breakdown) -> int:
    from estimator.train_forward import attention_moment

    acts = {k[len("activations.") :]: v for k, v in mem.terms.items() if k.startswith("act")}
    return attention_moment(spec, workload, acts, spec.stacks[-1][1])


@register("memory.buffers", "reference")
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


def peak_memory(
    spec: ModelSpec, workload: Workload, mem: Breakdown | None = None
) -> tuple[int, str]:
    """(peak bytes, phase) of the timeline in the module docstring; ``mem``: memory(spec,
    workload) when the caller has it already."""
    mem = memory(spec, workload) if mem is None else mem
    if workload.is_training:
        return _train_peak(spec, workload, mem)
    return _inference_peak(spec, workload, mem)
