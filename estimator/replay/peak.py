"""The peak of a step: its timeline, phase by phase, over the memory terms of
estimator/terms/memory.py.

Training, steady state (optimizer states exist; grads set to None before the forward; the
step's inputs live throughout; the model output is dropped before backward):
  forward        = weights + master + optimizer + inputs + buffers + activations + logits
                   (at the loss)
                   (under autocast: the low logits, their fp32 copy, the cast cache's bias
                   copies and the held fp32 head input, estimator/rules/autocast.py), or
                   earlier, inside the last layer's attention (estimator/replay/forward.py)
  backward       = the highest point of a replay of autograd's backward from (forward -
                   logits), tensor by tensor (estimator/replay/backward.py; per-module-kind
                   steps in estimator/rules/reference/backward.py): d(log-probs) and d(logits)
                   [n, V], each module's parameter gradients and backward transients (grads
                   of the scores, softmax backward, norms, FFN, ...), its saved tensors freed;
                   a checkpointed layer's saved set is rebuilt when backward reaches it; the
                   tied/shared embedding's gradient waits in autograd's input buffer
  optimizer_step = weights + master + optimizer + inputs + buffers + gradients + the step's
                   temporaries of (optimizer, optimizer_impl) (estimator/replay/
                   optimizer_step.py: foreach AdamW one more exp_avg_sq, for-loop
                   max_t (n_{t-1} + 2 n_t), fused none); activations already freed
Inference (no grad): weights + buffers (``buffers``: the sinusoidal tables) + inputs, then a
replay of the model's forward op by op (estimator/replay/inference.py): every tensor it
returns, live until Python drops it (residual stream, norm outputs, q/k/v, masks, scores and
probabilities under eager, FFN intermediates, logits, the KV cache as it grows). Prefill: one
pass; decode: the prompt's prefill, then one-token steps with the whole cache (phase of the
larger). Allocator rounding, caching and kernel scratch are not modelled.

``terms`` may be another rank's share (estimator/plan/: ZeRO, tensor parallelism): the
timeline is evaluated on whatever terms it is given.
"""

from __future__ import annotations

from typing import Any

from estimator.replay.backward import backward_peak
from estimator.replay.forward import attention_moment
from estimator.replay.inference import cached_prefill, decode_peaks, prefill_peak
from estimator.replay.optimizer_step import step_temporaries_bytes
from estimator.rules.registry import rule
from estimator.shapes import Shapes
from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.sym import vmax, vpick
from estimator.terms.activations import frozen_layers
from estimator.terms.finetune import (
    freeze_exact,
    frozen_flags,
    frozen_input_norm,
    grad_bytes_by_module,
)
from estimator.terms.memory import decode_input_bytes, group, input_bytes, state_terms
from estimator.terms.params import params
from estimator.terms.quant import dequantized_transient_bytes

Terms = dict[str, Any]


def _logits_bytes(spec: ModelSpec, sh: Shapes, n: Any) -> Any:
    return n * spec.vocab_size * sh.cb if spec.lm_head else 0


def _activation_terms(terms: Terms) -> Terms:
    return {k[len("activations.") :]: v for k, v in terms.items() if k.startswith("act")}


def _backward_sweep(spec: ModelSpec, sh: Shapes, terms: Terms, start: Any, rank: Any = None) -> Any:
    """Highest live bytes while backward runs, from ``start`` (every activation live): the
    replay of autograd's backward module by module (estimator/replay/backward.py). ``rank``:
    one rank's (unsharded local gradients by module, FSDP2 gathers or None)."""
    if rank is None:
        grads, gathers = {k: nbytes(v, sh.dtype) for k, v in params(spec).terms.items()}, None
        if sh.finetune.kind != "full":  # issue 20: the trainable tensors' gradients only
            grads = grad_bytes_by_module(spec, sh)
    else:
        grads, gathers = rank[:2]
    return backward_peak(spec, sh, _activation_terms(terms), grads, start, gathers)


def _step_temporaries(spec: ModelSpec, sh: Shapes, terms: Terms) -> Any:
    """The optimizer step's temporaries (estimator/replay/optimizer_step.py), scaled to the
    share of the optimizer states in ``terms`` when a plan shards them (ZeRO, tp: a rank
    steps its shard)."""
    temporaries = step_temporaries_bytes(spec, sh)
    full = sum(state_terms(spec, sh)[k] for k in terms if k.startswith("optimizer."))
    if temporaries and full and group(terms, "optimizer") != full:
        return temporaries * group(terms, "optimizer") // full
    return temporaries


def _saved_inputs(spec: ModelSpec, sh: Shapes, terms: Terms) -> Any:
    """Saved activations that are the step's input tensors themselves (one storage, already
    in ``input_bytes``): the token ids nn.Embedding saves (``embed``: input_ids, and
    decoder_input_ids for encoder-decoder), the token type ids (``{stack}.token_type``)
    when the step passes them in, and the pixel values the patch projection saves."""
    typed = spec.n_token_types and rule("inputs.token_type", spec)(spec, sh)
    return sum(
        v
        for k, v in terms.items()
        if k in ("activations.embed", "activations.encoder.patch.proj")
        or (typed and k.startswith("activations.") and k.endswith(".token_type"))
    )


def _last_layer_and_head(spec: ModelSpec, sh: Shapes, terms: Terms) -> Any:
    """Activation bytes saved from the last layer of the last stack on: its share of the
    per-layer terms (and of the checkpointed layer inputs), the final norm and the heads."""
    stack, n_layers = sh.last.name, sh.last.n_layers
    out = 0
    for k, v in terms.items():
        if not k.startswith("activations."):
            continue
        name = k[len("activations.") :]
        if name.startswith(f"{stack}.layers.") or name == stack:
            out += v // n_layers
        elif not name.startswith(tuple(s for s, _ in spec.stacks)) and name != "embed":
            out += v  # the heads: lm_head, loss, pooler, head_transform
        elif name == f"{stack}.final_norm":
            out += v
    return out


def _head_terms(spec: ModelSpec, terms: Terms) -> Any:
    """Activation bytes saved from the final norm of the last stack on (the heads)."""
    stacks = tuple(s for s, _ in spec.stacks)
    last = spec.stacks[-1][0]
    out = 0
    for k, v in terms.items():
        name = k[len("activations.") :]
        if not k.startswith("activations.") or name == "embed":
            continue
        if name == f"{last}.final_norm" or not name.startswith(stacks):
            out += v
    return out


def _lora_moment(spec: ModelSpec, sh: Shapes, terms: Terms) -> Any:
    """Bytes beyond the states live inside the last layer's LoRA-wrapped linears (issue 20,
    rule ``live.lora_moment``: estimator/rules/reference/finetune.py, rules/hf/lora.py); None
    where it is not modelled."""
    if spec.arch != "decoder":
        return 0
    last = frozen_layers(spec, sh, "decoder", sh.s_dec, 0)[spec.n_decoder_layers == 1]
    return rule("live.lora_moment", spec, sh)(spec, sh, _activation_terms(terms), last)


def train_peak(spec: ModelSpec, sh: Shapes, terms: Terms, rank: Any = None) -> tuple[Any, str]:
    """(peak bytes, phase) of a training step over ``terms`` (module docstring). ``rank``:
    (local gradient bytes by module, Gathers or None, resident bytes, step temporaries) of
    one rank of a parallel step (estimator/terms/ranks.py): its unsharded gradients,
    FSDP2's gathered parameters at the loss, inside the last attention and through
    backward, the engine's buffers live the whole step (DDP's gradient buckets) and the
    optimizer step's temporaries over the rank's own tensors, and (extra at the loss, live
    at the gather) of a tensor-parallel rank's logits all-gather (ranks.tp_logits)."""
    gathers = rank[1] if rank is not None else None
    resident = rank[2] if rank is not None else 0
    fwd_extra = gathers.forward_extra() if gathers is not None else 0
    moment_extra = gathers.moment_extra() if gathers is not None else 0
    bwd_extra = gathers.backward_extra() if gathers is not None else 0
    n_out = sh.b * sh.s_out
    logits = _logits_bytes(spec, sh, n_out)
    states = group(terms, "weights") + group(terms, "optimizer") + input_bytes(spec, sh)
    # the model's buffers (rule memory.buffers: BERT's position_ids and token_type_ids, the
    # sinusoidal tables), read by the forward's first ops and live to the step's end
    states += resident + rule("memory.buffers", spec)(spec, sh)
    grads = group(terms, "gradients")
    acts = group(terms, "activations")
    # while activations live, the ids the embeddings saved are the inputs' own storage
    with_acts = states - _saved_inputs(spec, sh, terms)
    # forward: at the loss, the logits and their log-softmax (an activation) are both live
    # + what the model's forward keeps live until it returns, saved by nothing (HF: its cache)
    held = rule("train.held", spec)(spec, sh)
    forward = with_acts + acts + logits + held + fwd_extra
    if sh.autocast:  # the low logits, their fp32 copy, the cast cache's biases, ...
        moment = rule("live.autocast_loss", spec)(spec, sh, n_out)  # rules/autocast.py
        forward = with_acts + acts + moment + held + fwd_extra
    forward += rule("live.loss_moment", spec, sh)(spec, sh)  # what else it holds
    # issue 20c: what the checkpointed layers' closures keep (rules/hf/checkpoint.py)
    ckpt = 0
    if sh.checkpointing == "full" and spec.arch == "decoder":
        ckpt = rule("live.checkpoint_held", spec)(spec, sh)
    forward += ckpt
    if sh.finetune.lora:  # issue 20: the frozen head's input, saved by nothing
        forward += rule("live.frozen_head_input", spec, sh)(spec, sh)  # rules/finetune.py
    if sh.finetune.kind == "freeze" and freeze_exact(spec, sh):  # issue 20: rules/freeze.py
        held = rule("live.freeze_held", spec, sh)  # the flags the terms compute (rules below)
        forward += held(spec, sh, frozen_flags(spec, sh), frozen_input_norm(spec, sh))
    if rank is not None:  # TP: the logits' padded storage (and SP's held stack output)
        forward += rank[4][0]
    if rank is not None and rank[4][1]:  # ... and the logits' gather
        before_loss = acts - terms.get("activations.loss", 0)
        forward = vmax(forward, with_acts + held + before_loss + rank[4][1] + fwd_extra)
    # or earlier, inside the last layer's attention: eager scores, or fused chunked attention's
    # math sdpa block scores + mask (estimator/replay/forward.py)
    # (``held`` is not added: the moment counts the reference's held embedding output
    # itself, and T5's held tensors come after its stacks, where the moment is 0)
    moment = attention_moment(spec, sh, _activation_terms(terms))
    forward = vmax(forward, with_acts + moment + moment_extra)
    if sh.finetune.lora and rank is None:  # issue 20: or inside the last layer's LoRA paths
        lora = _lora_moment(spec, sh, terms)
        forward = vmax(forward, with_acts + held + lora) if lora is not None else forward
    if gathers is not None:  # the last layer's unshard: every activation before that layer
        before = acts - _last_layer_and_head(spec, sh, terms)
        forward = vmax(forward, with_acts + held + before + gathers.unshard_extra())
        if (head := gathers.head_unshard_extra()) is not None:  # torchtitan: the head's unshard
            forward = vmax(forward, with_acts + held + acts - _head_terms(spec, terms) + head)
            forward = vmax(forward, with_acts + held + gathers.embed_unshard_extra())
    # backward start: the logits are freed with the model output; the walk begins with
    # nll_loss_backward's d(log-probs), the targets and total_weight it frees, then
    # log_softmax_backward's d(logits) [n, V] (issue 22l: no bound of 2 [n, V] beside every
    # activation, which counted the freed targets too: n * 8 + 4 B above the measurement)
    start = with_acts + acts + bwd_extra
    backward = _backward_sweep(spec, sh, terms, start, rank)
    temporaries = rank[3] if rank is not None else _step_temporaries(spec, sh, terms)
    step = states + grads + temporaries
    return vpick([(forward, "forward"), (backward, "backward"), (step, "optimizer_step")])


def inference_peak(spec: ModelSpec, sh: Shapes, terms: Terms) -> tuple[Any, str]:
    """Replay of the model's no-grad forward (estimator/replay/inference.py) from weights +
    buffers + inputs: a prefill, or a prompt prefill then one-token steps."""
    resident = group(terms, "weights") + group(terms, "buffers")
    if sh.quant is not None:  # one dequantized block weight, as a bound (terms/quant.py)
        resident += dequantized_transient_bytes(spec, sh.quant, sh.dtype)
    if sh.mode == "prefill":
        start = resident + input_bytes(spec, sh)
        if sh.kv_cache and spec.arch != "encoder" and spec.lm_head:  # Transformer.prefill
            return cached_prefill(spec, sh, start, sh.s_dec).peak, "prefill"
        return prefill_peak(spec, sh, start), "prefill"
    if not sh.kv_cache:  # each step re-runs the whole prefix: the last one is longest
        last = sh.prompt + sh.new_tokens
        if spec.arch == "encoder-decoder":
            longest = sh.with_sizes(spec, mode="prefill", target_len=last)
        else:
            longest = sh.with_sizes(spec, mode="prefill", s=last)
        start = resident + input_bytes(spec, longest)
        return prefill_peak(spec, longest, start), "decode"
    prefill, decode = decode_peaks(spec, sh, resident + decode_input_bytes(spec, sh))
    return vpick([(prefill, "prefill"), (decode, "decode")])  # a tie: the prefill


def peak_memory(spec: ModelSpec, sh: Shapes, terms: Terms) -> tuple[Any, str]:
    """(peak bytes, phase) of the step's timeline over the memory ``terms``."""
    if sh.training:
        return train_peak(spec, sh, terms)
    return inference_peak(spec, sh, terms)
