"""The live memory of one training step of a recurrent language model (reference_model/
recurrent.py ``RecurrentLM`` on CPU, torch's composite LSTM cells, oneDNN off), moment by
moment: its peak, the phase of the peak and what is live then.

The step is the one ``profiler.run`` tracks: forward, the stand-in objective
``out.float().pow(2).mean()`` (reference_model/train.py ``objective`` for a model without an
LM loss), backward, ``optimizer.step()``; the baseline is the weights, the optimizer states
(and Adam's 0-dim ``step`` per tensor) and the inputs, gradients set to None.

Moments (all above the baseline; S = the saved activations of estimator/terms/recurrent.py
without the token ids, which are inputs):

- ``forward``: the end of the last layer of the last stack call
  (aten/src/ATen/native/RNN.cpp: ``FullLayer`` precomputes the input projection
  ``linear_ih(input)`` [T, b, gates H] for all steps and keeps it until the layer returns; a
  bidirectional layer frees the forward direction's before the reverse one runs; every
  layer's last ``(h, c)`` lives until ``_lstm_impl`` stacks the final states; each direction's
  outputs are stacked [T, b, h_out], a bidirectional layer concatenates them); for separate
  directions also the moment of ``torch.cat([fwd, bwd.flip(1)])``; with a head the moment of
  its bias add (the ``mm`` [bT, V] and the result [b, T, V]). The module input ``x`` is live
  through the forward (saved, hence in S, when the LSTM reads it without a copy: b = 1 or
  T = 1).
- ``forward_end``: the output (saved by ``pow``), ``pow``'s result and the 0-dim loss.
- ``backward``: its start: ``pow_backward`` and ``mean_backward``
  (tools/autograd/derivatives.yaml) make four tensors of the output's size (div, pow, two
  mul) while the output is live; and its end: every gradient.
- ``backward`` also: each direction's first weight-gradient accumulation
  (``_recurrent_backward``: three W_hh-sized tensors).
- the character CNN (ELMo's input): in forward each filter bank's conv output and its max;
  in backward each bank's max_backward (zeros and scatter of the conv output's size).
- ``optimizer_step``: the gradients and the step's temporaries
  (estimator/replay/optimizer_step.py, the for-loop step torch runs on CPU).

Refused by name (SpecError): GRU and RNN cells, seq2seq. Not modelled: oneDNN's and cuDNN's
fused LSTM (a workspace instead of these tensors). Said beside every peak: the moments between
the modelled ones (later steps of the recurrent backward, the convolutions' backward); the
tests (tests/recurrent/test_recurrent_peak.py) check the peak against the tracker within 2%.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from estimator.spec.errors import SpecError
from estimator.spec.recurrent import RecurrentSpec
from estimator.terms.recurrent import (
    _cell_params,
    _cell_step_saved,
    recurrent_params,
    recurrent_saved_bytes,
)

_STATES = {"adamw": 2, "adam": 2, "sgd-momentum": 1, "sgd": 0, "none": 0}
_FORLOOP = {"adamw": "adamw", "adam": "adam", "sgd-momentum": "sgd-momentum", "sgd": "sgd"}


class RecurrentPeak(BaseModel):
    """The training step's peak of live bytes, its phase and what is live then (bytes per
    part; ``baseline.*`` exist before the step)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peak_bytes: int
    phase: str
    parts: dict[str, int]
    #: the highest live bytes of each modelled phase
    by_phase: dict[str, int]


def param_shapes(spec: RecurrentSpec) -> list[tuple[int, ...]]:
    """The parameter tensors in ``model.parameters()`` order (reference_model/recurrent.py;
    torch.nn.LSTM's ``_flat_weights_names``: per layer and direction weight_ih, weight_hh,
    bias_ih, bias_hh, weight_hr)."""
    shapes: list[tuple[int, ...]] = []
    c = spec.char_cnn
    if c is not None:
        shapes.append((c.char_vocab, c.char_dim))
        for w, n in c.filters:
            shapes += [(n, c.char_dim, w), (n,)]
        nf = c.n_filters
        for _ in range(c.highway):
            shapes += [(2 * nf, nf), (2 * nf,)]
        shapes += [(spec.d_embed, nf), (spec.d_embed,)]
    else:
        shapes.append((spec.vocab, spec.d_embed))
    calls = 2 if spec.bidirectional == "separate" else 1
    dirs = 2 if spec.bidirectional == "concat" else 1
    g, h = spec.gates, spec.hidden
    for _ in range(calls):
        for layer in range(spec.n_layers):
            for _ in range(dirs):
                shapes += [(g * h, spec.layer_input(layer)), (g * h, spec.h_out)]
                shapes += [(g * h,)] * {"torch": 2, "single": 1, "none": 0}[spec.bias]
                if spec.proj_size:
                    shapes.append((spec.proj_size, h))
    if spec.head_vocab:
        shapes += [(spec.head_vocab, spec.h_out * spec.directions), (spec.head_vocab,)]
    return shapes


def _check(spec: RecurrentSpec, optimizer: str) -> None:
    if spec.cell != "lstm" or spec.kind != "lm":
        raise SpecError(
            f"the training peak of a {spec.cell} {spec.kind} ({spec.name}) is not modelled; "
            "it is for LSTM language models (cell='lstm', kind='lm')"
        )
    if optimizer not in _STATES:
        raise SpecError(
            f"optimizer={optimizer!r} is not modelled for recurrent models; use one of "
            f"{', '.join(_STATES)}"
        )


def recurrent_train_peak(
    spec: RecurrentSpec, batch: int, seq_len: int, dtype_bytes: int = 4, optimizer: str = "adamw"
) -> RecurrentPeak:
    """The peak of one training step (module docstring): the highest of the modelled moments,
    with the baseline and the moment's parts."""
    from estimator.replay.optimizer_step import _replay

    _check(spec, optimizer)
    b, t, f = batch, seq_len, dtype_bytes
    n = b * t
    g, h, ho = spec.gates, spec.hidden, spec.h_out
    big_l = spec.n_layers
    weights = recurrent_params(spec).total * f
    n_tensors = len(param_shapes(spec))
    ids = n * (spec.char_cnn.max_chars if spec.char_cnn is not None else 1) * 8
    baseline = {
        "baseline.weights": weights,
        "baseline.optimizer": _STATES[optimizer] * weights
        + (4 * n_tensors if optimizer in ("adam", "adamw") else 0),  # 0-dim fp32 step
        "baseline.inputs": ids,
    }
    saved_terms = recurrent_saved_bytes(spec, b, t, f).terms
    saved = sum(v for k, v in saved_terms.items() if k not in ("embed", "char_cnn.embed"))
    copied = b > 1 and t > 1  # the LSTM copies a transposed (batch_first) input
    d_in = spec.d_embed
    x = n * d_in * f if copied else 0  # the module input, live through the forward
    width = ho * spec.directions
    out_n = n * (spec.head_vocab or width)  # the model's output elements
    # the stack call that runs last: both directions (concat) or one
    dirs = 2 if spec.bidirectional == "concat" else 1
    layer_end = {
        "input_projection": n * g * h * f,  # the last direction's [T, b, gates H]
        "last_states": big_l * dirs * b * (h + ho) * f,  # every layer's last (c, h)
        "layer_outputs": dirs * n * ho * f,  # each direction's stack [T, b, h_out]
    }
    if dirs == 2:
        layer_end["layer_concat"] = n * 2 * ho * f
    moments: dict[str, dict[str, int]] = {}
    c = spec.char_cnn
    if c is not None:
        # per filter bank (reference_model/recurrent.py CharEncoder): conv [bT, n_k, chars -
        # w + 1], then its max's values and int64 indices, while the earlier banks' relu
        # results and indices and the embedded characters live
        done = 0
        for k, (w, nk) in enumerate(c.filters):
            moments[f"forward.char_cnn.{k}"] = {
                "char_cnn.embedded": n * c.max_chars * c.char_dim * f,
                "char_cnn.pooled": done,
                "char_cnn.conv_output": n * nk * (c.max_chars - w + 1) * f,
                "char_cnn.max": n * nk * (f + 8),
            }
            done += n * nk * (f + 8)
    # the head's saved input (its copy of the rnn output) exists only from the head on
    head_saved = saved_terms.get("head", 0)
    fwd = {"activations.saved": saved - head_saved, "input": x}
    if spec.bidirectional == "separate":
        # forward(): x, fwd, (h_n, c_n) of rnn_fwd in ``_``, the flipped input (saved when the
        # LSTM reads it without a copy)
        sep = {
            "input_flipped": x,
            "forward_stack_output": n * ho * f,
            "forward_stack_states": big_l * b * (h + ho) * f,
        }
        moments["forward.layer_end"] = {**fwd, **sep, **layer_end}
        moments["forward.concat"] = {
            **fwd,
            **sep,
            "input_flipped": 0,  # a temporary of the rnn_bwd call, freed
            "forward_stack_states": big_l * b * (h + ho) * f,  # ``_`` now rnn_bwd's
            "backward_stack_output": n * ho * f,
            "backward_flipped": n * ho * f,
            "concat": n * width * f,
        }
    else:
        moments["forward.layer_end"] = {**fwd, **layer_end}
    if spec.head_vocab:
        # the head reads a transposed (batch_first) view: copied (saved, in S), then mm
        # [bT, V] and the bias add; a contiguous input (b = 1 or T = 1, or the separate
        # directions' cat) goes through one addmm (aten/src/ATen/native/Linear.cpp, linear)
        via_copy = copied and spec.bidirectional != "separate"
        head = {**fwd, "activations.saved": saved, "head.output": out_n * f}
        if via_copy:
            head.update({"rnn_output": n * width * f, "head.mm": out_n * f})
        if spec.bidirectional == "separate":
            head.update(
                forward_stack_output=n * ho * f,
                backward_stack_output=n * ho * f,
                forward_stack_states=big_l * b * (h + ho) * f,  # ``_``: rnn_bwd's (h_n, c_n)
            )
        else:
            head["rnn_states"] = big_l * dirs * b * (h + ho) * f  # ``y, _ = self.rnn(x)``
        moments["forward.head"] = head
    # the model's output is saved by pow (the rnn output, not in S, without a head)
    held = {"activations.saved": saved, "output": out_n * f}
    moments["forward_end"] = {**held, "loss.pow": out_n * f, "loss": 4}
    moments["backward.start"] = {**held, "loss": 4, "grad.loss": 4, "loss.backward": 4 * out_n * f}
    moments["backward.end"] = {"gradients": weights}
    if t > 1:
        moments.update(_recurrent_backward(spec, b, t, f, saved))
    if c is not None:
        # the banks' backward, last bank first (CatBackward): max's backward
        # (value_selecting_reduction_backward: new_zeros, then scatter) makes two tensors of
        # the conv output's size while every gradient but the char embedding's and the
        # unprocessed banks' exists; the embedded characters stay saved, their gradient
        # accumulates from the first processed bank on
        nf = c.n_filters
        pending = list(range(len(c.filters)))
        for k in reversed(range(len(c.filters))):
            w, nk = c.filters[k]
            not_yet = c.char_vocab * c.char_dim + sum(
                c.char_dim * c.filters[j][0] * c.filters[j][1] + c.filters[j][1] for j in pending
            )
            moments[f"backward.char_cnn.{k}"] = {
                "gradients": weights - not_yet * f,
                "char_cnn.embedded": n * c.max_chars * c.char_dim * f,
                "char_cnn.grad_embedded": n * c.max_chars * c.char_dim * f
                if k < len(c.filters) - 1
                else 0,
                # the highway's input gradient, sliced per bank (none measured without one)
                "char_cnn.grad_pooled": n * nf * f if c.highway else 0,
                "char_cnn.saved_banks": sum(n * c.filters[j][1] * (8 + f) for j in pending),
                "char_cnn.max_backward": 2 * n * nk * (c.max_chars - w + 1) * f,
                "loss": 8,
            }
            pending.remove(k)
    impl = "forloop"
    temps = 0
    if optimizer in _FORLOOP:
        d = {4: "fp32", 2: "bf16"}.get(f, "fp32")  # the states are in the weights' dtype
        temps = _replay(tuple(param_shapes(spec)), optimizer, impl, d, "cpu")
    if optimizer != "none":
        moments["optimizer_step"] = {"gradients": weights, "optimizer.temporaries": temps}
    by_phase: dict[str, int] = {}
    for name, parts in moments.items():
        phase = name.split(".")[0]
        by_phase[phase] = max(by_phase.get(phase, 0), sum(parts.values()))
    top = max(moments, key=lambda k: sum(moments[k].values()))
    parts = {**baseline, **{k: v for k, v in moments[top].items() if v}}
    return RecurrentPeak(
        peak_bytes=sum(parts.values()),
        phase=top.split(".")[0],
        parts=parts,
        by_phase=by_phase,
    )


def _recurrent_backward(
    spec: RecurrentSpec, b: int, t: int, f: int, saved: int
) -> dict[str, dict[str, int]]:
    """Each direction's first weight-gradient accumulation (its second step backward): the
    autograd engine adds a step's W_hh gradient into the running sum out of place
    (torch/csrc/autograd/input_buffer.cpp ``accumulate``: ``old + new``), so three W_hh-sized
    tensors live at once, beside the two steps' gate gradients (kept for the input
    projection's backward, ``stack``-ed at the end), the running bias sum and the running
    gradients of h and c. Directions run last-created first: the top layer down; in a
    bidirectional layer the reverse direction first; for separate directions the whole
    backward stack before the forward one."""
    n = b * t
    g, h, ho = spec.gates, spec.hidden, spec.h_out
    copied = b > 1 and t > 1
    calls = 2 if spec.bidirectional == "separate" else 1
    dirs = 2 if spec.bidirectional == "concat" else 1
    head = (spec.head_vocab * spec.h_out * spec.directions + spec.head_vocab) * f
    grads = head if spec.head_vocab else 0
    # the gradient of the rnn output (pow's backward, or the head's input gradient)
    top_grad = n * ho * spec.directions * f
    head_saved = n * ho * spec.directions * f if spec.head_vocab else 0
    remaining = saved - head_saved
    out: dict[str, dict[str, int]] = {}
    for call in reversed(range(calls)):
        # separate directions: rnn_bwd's part of the top gradient is flipped into a new tensor
        # (FlipBackward), rnn_fwd's is a slice of it, kept until rnn_fwd's top layer runs
        kept = top_grad if call == 1 else 0
        pending = n * ho * f if call == 1 else top_grad
        for layer in reversed(range(spec.n_layers)):
            cell = _cell_params(spec, layer)
            w_hh = cell["weight_hh"] * f
            d_in = spec.layer_input(layer)
            per_dir_in = n * d_in * f if (layer == 0 and copied) else n * d_in * f // dirs
            step = _cell_step_saved(spec) * b * f
            for d in reversed(range(dirs)):
                own = per_dir_in + t * step  # this direction's saved (input, T steps)
                # the output gradient reaches each step as a view (StackBackward: unbind); a
                # step's view is dropped when dh from the step above is added to it, so at
                # the second step's accumulation views remain only when T > 3 (or the other
                # direction of a bidirectional layer still holds the same storage)
                held = kept + (pending if (t > 3 or dirs == 2) else 0)
                out[f"backward.rnn.{call}.{layer}.{d}"] = {
                    "gradients": grads,
                    "activations.saved": remaining - 2 * step + b * h * f,
                    "grad.layer_output": held,
                    "rnn.weight_hh_accumulation": 3 * w_hh,
                    "rnn.gate_grads": 2 * b * g * h * f,
                    "rnn.running": b * h * f + g * h * f + cell.get("weight_hr", 0) * f,
                    "loss": 8,
                }
                remaining -= own
                grads += sum(cell.values()) * f
            pending = n * d_in * f * (dirs if layer > 0 else 1)
    return out
