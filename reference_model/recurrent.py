"""The recurrent models of estimator/spec/recurrent.py in PyTorch: torch.nn.LSTM / GRU / RNN
stacks, ELMo's character CNN with highway layers, an LM head; an encoder-decoder for seq2seq.

Module paths are the estimator's term names (estimator/terms/recurrent.py): ``embed``,
``char_cnn.{embed,conv,highway,proj}``, ``rnn`` (``rnn_fwd`` / ``rnn_bwd`` for separate
directions), ``head``; ``encoder.`` / ``decoder.`` for seq2seq. torch's cells have two
biases, so a spec with ``bias="single"`` (AllenNLP's cell) or ``"none"`` with a seq2seq is
built only as torch has it: refused by name here.
"""

from __future__ import annotations

import torch
from torch import nn

from estimator.spec.errors import SpecError
from estimator.spec.recurrent import CharCNN, RecurrentSpec

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _stack(spec: RecurrentSpec, bidirectional: bool) -> nn.Module:
    kwargs = {"proj_size": spec.proj_size} if spec.proj_size else {}
    return _CELLS[spec.cell](
        spec.d_embed,
        spec.hidden,
        num_layers=spec.n_layers,
        bias=spec.bias != "none",
        batch_first=True,
        bidirectional=bidirectional,
        **kwargs,
    )


class Highway(nn.Module):
    """allennlp/modules/highway.py: y = g * x + (1 - g) * relu(W_h x), g = sigmoid(W_g x);
    one Linear(d, 2 d) per layer (the gate half's bias starts at 1 there; init is moot here)."""

    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            nonlinear, gate = layer(x).chunk(2, dim=-1)
            g = torch.sigmoid(gate)
            x = g * x + (1 - g) * torch.relu(nonlinear)
        return x


class CharEncoder(nn.Module):
    """allennlp/modules/elmo.py ``_ElmoCharacterEncoder``: [b, T, chars] ids -> [b, T, d]."""

    def __init__(self, c: CharCNN, d_out: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.char_vocab, c.char_dim)
        self.conv = nn.ModuleList(nn.Conv1d(c.char_dim, n, w) for w, n in c.filters)
        self.highway = Highway(c.n_filters, c.highway)
        self.proj = nn.Linear(c.n_filters, d_out)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        b, t, n = chars.shape
        x = self.embed(chars.reshape(b * t, n)).transpose(1, 2)  # [bT, char_dim, chars]
        pooled = [torch.relu(conv(x).max(dim=-1).values) for conv in self.conv]
        return self.proj(self.highway(torch.cat(pooled, dim=-1))).reshape(b, t, -1)


class RecurrentLM(nn.Module):
    """A (bi)directional recurrent language model: token ids [b, T] (or characters
    [b, T, max_chars] with a char CNN) -> logits [b, T, head_vocab] (or the top states)."""

    def __init__(self, spec: RecurrentSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.char_cnn is not None:
            self.char_cnn = CharEncoder(spec.char_cnn, spec.d_embed)
        else:
            self.embed = nn.Embedding(spec.vocab, spec.d_embed)
        if spec.bidirectional == "separate":
            self.rnn_fwd = _stack(spec, bidirectional=False)
            self.rnn_bwd = _stack(spec, bidirectional=False)
        else:
            self.rnn = _stack(spec, bidirectional=spec.bidirectional == "concat")
        if spec.head_vocab:
            self.head = nn.Linear(spec.h_out * spec.directions, spec.head_vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.char_cnn(ids) if self.spec.char_cnn is not None else self.embed(ids)
        if self.spec.bidirectional == "separate":
            fwd, _ = self.rnn_fwd(x)
            bwd, _ = self.rnn_bwd(x.flip(1))
            y = torch.cat([fwd, bwd.flip(1)], dim=-1)
        else:
            y, _ = self.rnn(x)
        return self.head(y) if self.spec.head_vocab else y


class Seq2Seq(nn.Module):
    """Sutskever et al. 2014: the encoder's final (h, c) start the decoder."""

    def __init__(self, spec: RecurrentSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = nn.Module()
        self.encoder.embed = nn.Embedding(spec.vocab, spec.d_embed)
        self.encoder.rnn = _stack(spec, bidirectional=False)
        self.decoder = nn.Module()
        self.decoder.embed = nn.Embedding(spec.tgt_vocab, spec.d_embed)
        self.decoder.rnn = _stack(spec, bidirectional=False)
        self.head = nn.Linear(spec.h_out, spec.head_vocab)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder.rnn(self.encoder.embed(src))
        y, _ = self.decoder.rnn(self.decoder.embed(tgt), state)
        return self.head(y)


def build_recurrent(spec: RecurrentSpec, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The torch model of ``spec`` (random init, float32 unless told)."""
    if spec.bias == "single":
        raise SpecError(
            f"bias='single' ({spec.name}: AllenNLP's LSTM cell has one bias) cannot be built "
            "with torch.nn.LSTM (bias_ih and bias_hh); use bias='torch' for the reference model"
        )
    model = Seq2Seq(spec) if spec.kind == "seq2seq" else RecurrentLM(spec)
    return model.to(dtype)


def recurrent_inputs(spec: RecurrentSpec, batch: int, seq_len: int, seed: int = 0) -> tuple:
    """Random inputs for ``batch`` x ``seq_len`` (characters when the spec has a char CNN)."""
    g = torch.Generator().manual_seed(seed)
    if spec.kind == "seq2seq":
        src = torch.randint(spec.vocab, (batch, seq_len), generator=g)
        tgt = torch.randint(spec.tgt_vocab, (batch, seq_len), generator=g)
        return (src, tgt)
    if spec.char_cnn is not None:
        c = spec.char_cnn
        return (torch.randint(c.char_vocab, (batch, seq_len, c.max_chars), generator=g),)
    return (torch.randint(spec.vocab, (batch, seq_len), generator=g),)
