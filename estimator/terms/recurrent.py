"""The named quantities of a recurrent model (estimator/spec/recurrent.py), with the
Transformer's glossary conventions: parameters per component, FLOPs as torch's
FlopCounterMode counts them (2 m n k per matmul), the state inference carries (the recurrent
counterpart of the KV cache, constant in T) and the sequential depth (Table 1 of "Attention Is
All You Need").

Term names are the reference model's module paths (reference_model/recurrent.py):
``embed``, ``char_cnn.{embed,conv,highway,proj}``, ``rnn.{weight_ih,weight_hh,bias,weight_hr}``
(``rnn_fwd.`` and ``rnn_bwd.`` for separate directions; ``encoder.`` / ``decoder.`` in front
for a seq2seq model) and ``head``.
"""

from __future__ import annotations

from estimator.breakdown import Breakdown
from estimator.spec.recurrent import CharCNN, RecurrentSpec


def _cell_params(spec: RecurrentSpec, layer: int) -> dict[str, int]:
    """One direction of one layer: torch.nn.LSTM's weight_ih_l{k}, weight_hh_l{k},
    bias_ih_l{k} + bias_hh_l{k}, weight_hr_l{k} (torch/nn/modules/rnn.py, RNNBase.__init__)."""
    g, h = spec.gates, spec.hidden
    biases = {"torch": 2, "single": 1, "none": 0}[spec.bias]
    out = {
        "weight_ih": g * h * spec.layer_input(layer),
        "weight_hh": g * h * spec.h_out,
        "bias": biases * g * h,
    }
    if spec.proj_size:
        out["weight_hr"] = spec.proj_size * h
    return out


def _char_cnn_params(c: CharCNN, d_out: int) -> dict[str, int]:
    """allennlp/modules/elmo.py ``_ElmoCharacterEncoder``: Conv1d(char_dim, n, w) with bias
    per filter, Highway(n_filters, n_highway) = Linear(d, 2 d) per layer, Linear(n_filters,
    d_out) projection."""
    nf = c.n_filters
    return {
        "char_cnn.embed": c.char_vocab * c.char_dim,
        "char_cnn.conv": sum(c.char_dim * w * n + n for w, n in c.filters),
        "char_cnn.highway": c.highway * (nf * 2 * nf + 2 * nf),
        "char_cnn.proj": nf * d_out + d_out,
    }


def _add(terms: dict[str, int], name: str, value: int) -> None:
    if value:
        terms[name] = terms.get(name, 0) + value


def recurrent_params(spec: RecurrentSpec) -> Breakdown:
    """Parameters per component, exact (torch's modules; ``bias="single"``: AllenNLP's)."""
    terms: dict[str, int] = {}
    for i, prefix in enumerate(spec.prefixes):
        if spec.char_cnn is not None and i == 0:
            for name, n in _char_cnn_params(spec.char_cnn, spec.d_embed).items():
                _add(terms, prefix + name, n)
        else:
            vocab = spec.tgt_vocab if i == 1 else spec.vocab
            _add(terms, prefix + "embed", vocab * spec.d_embed)
        # one torch module per stack: ``rnn`` (both directions of torch's bidirectional
        # layer), or ``rnn_fwd`` and ``rnn_bwd`` for separate directions
        stacks = ("rnn_fwd", "rnn_bwd") if spec.bidirectional == "separate" else ("rnn",)
        per_stack = spec.directions // len(stacks)
        for stack in stacks:
            for layer in range(spec.n_layers):
                for name, n in _cell_params(spec, layer).items():
                    _add(terms, f"{prefix}{stack}.{name}", n * per_stack)
    if spec.head_vocab:
        width = spec.h_out * spec.directions
        _add(terms, "head", width * spec.head_vocab + spec.head_vocab)
    return Breakdown(unit="params", terms=terms)


def _rnn_matmul_weights(spec: RecurrentSpec) -> int:
    """Weight elements one token passes through in one stack (every layer and direction)."""
    total = 0
    for layer in range(spec.n_layers):
        cell = _cell_params(spec, layer)
        total += (
            cell["weight_ih"] + cell["weight_hh"] + cell.get("weight_hr", 0)
        ) * spec.directions
    return total


def recurrent_forward_flops(spec: RecurrentSpec, batch: int, seq_len: int) -> Breakdown:
    """Forward FLOPs of ``batch`` sequences of ``seq_len`` tokens (both stacks of a seq2seq
    model at ``seq_len``), as FlopCounterMode counts them: the input projection of a layer is
    one addmm over all T tokens, each step an mm with h (and one with the projection):
    2 b T x (weight elements) per layer; elementwise gate math is not counted (torch's
    flop_counter registers matmuls and convolutions only)."""
    tokens = batch * seq_len
    terms: dict[str, int] = {}
    for i, prefix in enumerate(spec.prefixes):
        c = spec.char_cnn
        if c is not None and i == 0:
            nf = c.n_filters
            conv = sum(2 * (c.max_chars - w + 1) * c.char_dim * w * n for w, n in c.filters)
            _add(terms, prefix + "char_cnn.conv", tokens * conv)
            _add(terms, prefix + "char_cnn.highway", tokens * c.highway * 2 * nf * 2 * nf)
            _add(terms, prefix + "char_cnn.proj", tokens * 2 * nf * spec.d_embed)
        _add(terms, prefix + "rnn", 2 * tokens * _rnn_matmul_weights(spec))
    if spec.head_vocab:
        _add(terms, "head", 2 * tokens * spec.h_out * spec.directions * spec.head_vocab)
    return Breakdown(unit="flops", terms=terms)


def recurrent_state_bytes(spec: RecurrentSpec, batch: int, dtype_bytes: int) -> int:
    """The state incremental inference carries per stack: h (h_out wide) per layer and
    direction, and an LSTM's c (H wide); constant in T, the counterpart of the KV cache."""
    per_cell = spec.h_out + (spec.hidden if spec.cell == "lstm" else 0)
    return batch * spec.n_layers * spec.directions * per_cell * dtype_bytes


def sequential_steps(spec: RecurrentSpec, seq_len: int) -> dict[str, int]:
    """Operations that cannot run in parallel: each layer runs T dependent steps (h_t needs
    h_{t-1}); torch and cuDNN's default run layer after layer (L x T in all; a wavefront
    schedule could reach L + T - 1). A self-attention layer needs 1."""
    per_stack = spec.n_layers * seq_len
    return {"per_layer": seq_len, "stack": per_stack * spec.stacks}


#: Table 1 of Vaswani et al. 2017: per layer, n = sequence length, d = representation width,
#: k = convolution kernel width, r = neighbourhood of restricted self-attention
TABLE1: dict[str, dict[str, str]] = {
    "self-attention": {"complexity": "n^2 d", "sequential": "1", "path": "1"},
    "recurrent": {"complexity": "n d^2", "sequential": "n", "path": "n"},
    "convolutional": {"complexity": "k n d^2", "sequential": "1", "path": "log_k(n)"},
    "self-attention (restricted)": {"complexity": "r n d", "sequential": "1", "path": "n/r"},
}


def table1_numbers(n: int, d: int, k: int = 3, r: int = 256) -> dict[str, dict[str, float]]:
    """TABLE1 evaluated (the orders of growth as numbers, constants 1)."""
    import math

    return {
        "self-attention": {"complexity": n * n * d, "sequential": 1, "path": 1},
        "recurrent": {"complexity": n * d * d, "sequential": n, "path": n},
        "convolutional": {
            "complexity": k * n * d * d,
            "sequential": 1,
            "path": max(1, math.ceil(math.log(n, k))) if n > 1 else 1,
        },
        "self-attention (restricted)": {
            "complexity": r * n * d,
            "sequential": 1,
            "path": max(1, math.ceil(n / r)),
        },
    }


def _cell_step_saved(spec: RecurrentSpec) -> int:
    """Elements one cell step saves per sequence, as torch's CPU cells in
    aten/src/ATen/native/RNN.cpp (``LSTMCell``, ``GRUCell``, ``SimpleCell``, run by
    ``FullLayer`` with the input projection precomputed for all steps) leave them to autograd:

    - LSTM: h_{t-1} (the addmm with W_hh), the gates [4H] (sigmoid_ / tanh_ in place on
      chunks of one tensor, whose results the products keep), c_{t-1}, tanh(c_t); with a
      projection also h_t before it (the mm with W_hr): 4H + H + H + h_out (+ H);
    - GRU: h_{t-1}, the hidden gates [3H], the clones autograd keeps for the in-place
      ``mul_`` of the new gate and of (h - n), and tanh's result: 7H;
    - RNN: the tanh result h_t (also the next step's addmm input): H, plus h_0 once.
    """
    h = spec.hidden
    if spec.cell == "lstm":
        return 4 * h + h + h + spec.h_out + (h if spec.proj_size else 0)
    if spec.cell == "gru":
        return 7 * h
    return h


def recurrent_saved_bytes(
    spec: RecurrentSpec, batch: int, seq_len: int, dtype_bytes: int = 4
) -> Breakdown:
    """Activations a training forward saves for backward, per component, in bytes (the
    reference model on CPU: torch's composite cells; the oneDNN / cuDNN fused LSTM keep a
    workspace instead, not modelled: see ``UNCHECKED``).

    - token ids (int64) for an embedding; with a char CNN: the character ids, the
      embedded characters (every convolution's input, one storage), per filter bank the
      max's int64 indices and the relu result, per highway layer its Linear input, the gate's
      sigmoid, relu and (1 - g), and the projection's input;
    - per layer and direction: the layer input once, copied when it is a transposed
      (batch-first) view with b > 1 and T > 1 (``linear`` on a non-contiguous 3-D input
      reshapes by copying; each direction of torch's bidirectional layer makes its own copy),
      shared by both directions otherwise; then T cell steps (``_cell_step_saved``), and an
      RNN's h_0;
    - the head's input: the top layer's output, a copy when it is a transposed view.
    """
    b, t, f = batch, seq_len, dtype_bytes
    n = b * t
    copied = b > 1 and t > 1
    terms: dict[str, int] = {}
    for i, prefix in enumerate(spec.prefixes):
        c = spec.char_cnn
        if c is not None and i == 0:
            nf = c.n_filters
            _add(terms, prefix + "char_cnn.embed", n * c.max_chars * 8)
            _add(terms, prefix + "char_cnn.conv", n * c.max_chars * c.char_dim * f)
            _add(terms, prefix + "char_cnn", n * nf * (8 + f))
            _add(terms, prefix + "char_cnn.highway.layers", c.highway * n * nf * f)
            _add(terms, prefix + "char_cnn.highway", c.highway * 3 * n * nf * f)
            _add(terms, prefix + "char_cnn.proj", n * nf * f)
            from_batch_first = True  # the projection's output, reshaped [b, T, d]
        else:
            _add(terms, prefix + "embed", n * 8)
            from_batch_first = True
        calls = 2 if spec.bidirectional == "separate" else 1
        names = ("rnn_fwd", "rnn_bwd") if calls == 2 else ("rnn",)
        dirs_per_call = 2 if spec.bidirectional == "concat" else 1
        for name in names:
            elements = 0
            for layer in range(spec.n_layers):
                width = spec.layer_input(layer)
                if layer == 0 and from_batch_first and copied:
                    elements += dirs_per_call * n * width  # one copy per direction
                else:
                    elements += n * width  # one storage both directions read
                steps = t * _cell_step_saved(spec) + (spec.hidden if spec.cell == "rnn" else 0)
                elements += dirs_per_call * b * steps
            _add(terms, prefix + name, elements * f)
    if spec.head_vocab:
        # the head's Linear input: the top output, [b, T, D h_out]
        _add(terms, "head", n * spec.h_out * spec.directions * f)
    return Breakdown(unit="bytes", terms=terms)


#: what these terms do not check (say so beside every recurrent number)
UNCHECKED = (
    "oneDNN's fused CPU LSTM (fp32 without a projection) and cuDNN's keep a workspace "
    "instead of the composite cells' saved tensors: measured with oneDNN off, cuDNN never",
    "GPU step time: a roofline per dependent step, never timed on a GPU",
)
